"""The portable model export (docs/spec.md §6): everything needed to score with numpy, no JVM."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from schemas.features import MODEL_FEATURES

EXPORT_FILE = "export.json"


class ModelError(Exception):
    """A model folder is missing, corrupt or incompatible."""


@dataclass(frozen=True)
class ModelExport:
    """Logistic regression over imputed, scaled features, as trained by MLlib."""

    version: str
    feature_order: list[str]
    coefficients: list[float]
    intercept: float
    imputation_means: list[float]
    scaler_std: list[float]
    prior: float
    dataset: str
    created_at: str
    metrics: dict[str, Any] = field(default_factory=dict)
    score_histogram: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.feature_order)
        if list(self.feature_order) != list(MODEL_FEATURES):
            raise ModelError(f"model {self.version}: feature order {self.feature_order} differs from the registry")
        for name in ("coefficients", "imputation_means", "scaler_std"):
            if len(getattr(self, name)) != n:
                raise ModelError(f"model {self.version}: {name} has {len(getattr(self, name))} values, expected {n}")
        if not 0.0 < self.prior < 1.0:
            raise ModelError(f"model {self.version}: prior {self.prior} is not a probability")
        for name in ("coefficients", "imputation_means", "scaler_std", "intercept"):
            if not np.isfinite(getattr(self, name)).all():  # a NaN weight would serve NaN risks (null in JSON)
                raise ModelError(f"model {self.version}: {name} has a NaN or infinite value")
        std = np.asarray(self.scaler_std, dtype=np.float64)
        inv_std = np.divide(1.0, std, out=np.zeros_like(std), where=std != 0.0)
        object.__setattr__(self, "_means", np.asarray(self.imputation_means, dtype=np.float64))
        object.__setattr__(self, "_inv_std", inv_std)
        object.__setattr__(self, "_coef", np.asarray(self.coefficients, dtype=np.float64))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Decline probability per row of an (n, 12) array; NaN cells are imputed with the training means."""
        x = np.where(np.isnan(features), self._means, features)
        margin = (x * self._inv_std) @ self._coef + self.intercept
        return 1.0 / (1.0 + np.exp(-margin))

    def save(self, folder: Path) -> Path:
        """Write `export.json` into `folder`."""
        path = folder / EXPORT_FILE
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, folder: Path) -> ModelExport:
        """Read `export.json` from a model folder; a clear ModelError when absent or corrupt."""
        path = folder / EXPORT_FILE
        try:
            raw = json.loads(path.read_text())
            return cls(**raw)
        except FileNotFoundError as exc:
            raise ModelError(f"{path}: no export file (not a model folder?)") from exc
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: corrupt export: {exc}") from exc
