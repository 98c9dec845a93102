"""PNG plots of a trained model's holdout predictions: ROC, calibration and score histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from batch.metrics import roc_curve  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def roc_plot(path: Path, labels: np.ndarray, scores: np.ndarray, auc: float,
             oracle: tuple[np.ndarray, float] | None = None) -> Path:
    """ROC curve of the model, and of the generator's true probabilities when known."""
    fig, ax = plt.subplots(figsize=(5, 5))
    fpr, tpr = roc_curve(labels, scores)
    ax.plot(fpr, tpr, label=f"model (AUC {auc:.4f})")
    if oracle is not None:
        fpr_o, tpr_o = roc_curve(labels, oracle[0])
        ax.plot(fpr_o, tpr_o, linestyle="--", label=f"oracle (AUC {oracle[1]:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the time holdout")
    ax.legend(loc="lower right")
    return _save(fig, path)


def calibration_plot(path: Path, bins: list[dict[str, Any]]) -> Path:
    """Mean predicted probability vs observed decline rate per calibration bin."""
    fig, ax = plt.subplots(figsize=(5, 5))
    used = [b for b in bins if b["count"]]
    ax.plot([b["mean_predicted"] for b in used], [b["observed_rate"] for b in used], marker="o", label="model")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="perfect")
    ax.set(xlabel="mean predicted decline risk", ylabel="observed decline rate", title="Calibration (10 bins)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return _save(fig, path)


def histogram_plot(path: Path, histogram: dict[str, list[float]]) -> Path:
    """The holdout score histogram saved in the export (the drift monitor's reference)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    edges = histogram["edges"]
    ax.bar(edges[:-1], histogram["fractions"], width=np.diff(edges), align="edge", edgecolor="white")
    ax.set(xlabel="predicted decline risk", ylabel="share of holdout offers", title="Score histogram", xlim=(0, 1))
    return _save(fig, path)
