"""Binary-classifier metrics in numpy: AUC, PR-AUC, log loss, calibration and score histograms."""

from __future__ import annotations

from typing import Any

import numpy as np

HISTOGRAM_BINS = 20
CALIBRATION_BINS = 10


def _arrays(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {p.shape} must be 1-d arrays of equal length")
    return y, p


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half); NaN when only one class is present."""
    y, p = _arrays(labels, scores)
    positives = float(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    mid_rank = upper - (counts - 1) / 2.0  # average 1-based rank of each distinct score
    rank_sum = float(mid_rank[inverse][y == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def roc_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) at every distinct threshold, from (0, 0) to (1, 1)."""
    y, p = _arrays(labels, scores)
    order = np.argsort(-p, kind="mergesort")
    y, p = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(p)), y.size - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def pr_auc(labels: Any, scores: Any) -> float:
    """Average precision: the step-wise area under the precision-recall curve."""
    y, p = _arrays(labels, scores)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    y, p = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(p)), y.size - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(labels: Any, scores: Any, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood with probabilities clipped to [eps, 1 - eps]."""
    y, p = _arrays(labels, scores)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def calibration(labels: Any, scores: Any, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Equal-width bins on [0, 1]: count, mean predicted probability and observed positive rate of each."""
    y, p = _arrays(labels, scores)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_y = np.bincount(index, weights=y, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, rate = sum_p / count, sum_y / count
    return [
        {
            "lo": i / bins,
            "hi": (i + 1) / bins,
            "count": int(count[i]),
            "mean_predicted": float(mean_p[i]) if count[i] else None,
            "observed_rate": float(rate[i]) if count[i] else None,
        }
        for i in range(bins)
    ]


def score_histogram(scores: Any, bins: int = HISTOGRAM_BINS) -> dict[str, list[float]]:
    """Equal-width histogram on [0, 1]: `edges` (bins + 1), `counts` and `fractions` (summing to 1)."""
    p = np.asarray(scores, dtype=np.float64)
    counts, edges = np.histogram(p, bins=bins, range=(0.0, 1.0))
    total = max(int(counts.sum()), 1)
    return {
        "edges": [float(e) for e in edges],
        "counts": [float(c) for c in counts],
        "fractions": [float(c) / total for c in counts],
    }


def summary(labels: Any, scores: Any) -> dict[str, Any]:
    """AUC, PR-AUC, log loss, base rate, row count and 10-bin calibration of one set of predictions."""
    y, p = _arrays(labels, scores)
    return {
        "rows": int(y.size),
        "base_rate": float(y.mean()) if y.size else float("nan"),
        "auc": roc_auc(y, p),
        "pr_auc": pr_auc(y, p),
        "log_loss": log_loss(y, p),
        "calibration": calibration(y, p),
    }
