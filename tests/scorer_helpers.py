"""Builders shared by the scorer tests: a hand-made model, driver records, score requests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from modelregistry.export import ModelExport
from modelregistry.registry import promote
from schemas.features import MODEL_FEATURES

DECLINE_WEIGHT = 4.0
INTERCEPT = -2.0
PRIOR = 0.3
TS_MS = 1_760_000_000_000  # request time used throughout (a Thursday, 08:53 UTC: peak hour)
HISTOGRAM = {"edges": [i / 10 for i in range(11)], "counts": [5, 10, 10, 10, 10, 10, 10, 10, 10, 5]}


def make_model(version: str, decline_weight: float = DECLINE_WEIGHT, histogram: dict | None = None) -> ModelExport:
    """A model whose risk is sigmoid(decline_weight * decline_rate + INTERCEPT); other features weigh 0."""
    coefficients = [decline_weight if name == "decline_rate" else 0.0 for name in MODEL_FEATURES]
    return ModelExport(
        version=version, feature_order=list(MODEL_FEATURES), coefficients=coefficients, intercept=INTERCEPT,
        imputation_means=[0.5] * len(MODEL_FEATURES), scaler_std=[1.0] * len(MODEL_FEATURES), prior=PRIOR,
        dataset="test", created_at="2026-01-01T00:00:00+00:00",
        score_histogram=HISTOGRAM if histogram is None else histogram,
    )


def expected_risk(decline_rate: float, decline_weight: float = DECLINE_WEIGHT) -> float:
    """What `make_model` predicts for a driver with this decline rate."""
    return 1.0 / (1.0 + math.exp(-(decline_weight * decline_rate + INTERCEPT)))


def save_model(models_dir: Path, model: ModelExport, activate: bool = True) -> None:
    """Write a model folder and (by default) promote it."""
    folder = models_dir / model.version
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder)
    if activate:
        promote(models_dir, model.version)


def driver_record(driver_id: str, decline_rate: float, event_ms: int = TS_MS - 60_000,
                  **bins: Any) -> tuple[str, dict[str, Any]]:
    """A complete driver record (every served bin) as the store writes it."""
    record = {
        "ds_decl_rate": decline_rate, "ds_avg_rating": 4.8, "ds_total_trips": 120, "da_trips_day": 3,
        "da_day": TS_MS // 86_400_000, "da_shift_start": TS_MS - 3_600_000, "da_consec_trips": 2,
        "da_accept_1h": 0.75, "_event_ms": event_ms, "_n_events": 10,
    }
    record.update(bins)
    return driver_id, record


def score_request(request_id: str, candidates: list[tuple[str, float]], ts_ms: int = TS_MS) -> dict[str, Any]:
    """A valid ScoreRequest for (driver_id, pickup_eta_min) candidates."""
    return {
        "request_id": request_id, "ts": ts_ms, "surge_multiplier": 1.2, "est_duration_min": 14.0,
        "rider_rating": 4.9, "candidates": [{"driver_id": d, "pickup_eta_min": eta} for d, eta in candidates],
    }
