"""Prediction drift: live decline-risk counts in the training histogram's bins, and their PSI."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from scorer.metrics import FOLD_EVERY

log = logging.getLogger(__name__)

PSI_FLOOR = 1e-4  # share given to empty bins so the log term stays finite
WINDOW = 10_000  # predictions per half-window; PSI covers the latest 1-2 windows


def training_bins(histogram: Mapping[str, Sequence[float]]) -> tuple[np.ndarray, np.ndarray] | None:
    """(edges, counts) of a `ModelExport.score_histogram` {"edges": [k+1], "counts": [k]}; None when unusable."""
    try:
        edges = np.asarray(histogram.get("edges", ()), dtype=np.float64).ravel()
        counts = np.asarray(histogram.get("counts", ()), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    if len(edges) < 2 or len(counts) != len(edges) - 1 or np.any(np.diff(edges) <= 0) or counts.sum() <= 0:
        return None
    return edges, counts


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins; NaN when either is empty."""
    if expected.sum() <= 0 or actual.sum() <= 0:
        return math.nan
    e = np.maximum(expected / expected.sum(), PSI_FLOOR)
    a = np.maximum(actual / actual.sum(), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


class DriftMonitor:
    """Sliding counts of served predictions over the training bins of the model in service."""

    def __init__(self, histogram: Mapping[str, Sequence[float]] | None = None) -> None:
        self.reset(histogram or {})

    def reset(self, histogram: Mapping[str, Sequence[float]]) -> None:
        """Start over for a newly served model."""
        bins = training_bins(histogram)
        if bins is None and histogram:
            log.warning("model score histogram has no usable edges/counts; PSI drift is not computed")
        self.edges, self.expected = bins if bins else (None, None)
        size = len(self.expected) if self.expected is not None else 0
        self._current, self._previous, self._in_current = np.zeros(size), np.zeros(size), 0
        self._pending: list[np.ndarray] = []

    def observe(self, risks: np.ndarray) -> None:
        """Buffer one request's predictions; they are counted every `FOLD_EVERY` requests and when read."""
        if self.edges is not None and len(risks):
            self._pending.append(risks)
            if len(self._pending) >= FOLD_EVERY:
                self._fold()

    def _fold(self) -> None:
        """Count the buffered predictions; those outside the training range count in the first or last bin."""
        if not self._pending:
            return
        risks, self._pending = np.concatenate(self._pending), []
        bins = len(self.expected)
        index = np.clip(np.searchsorted(self.edges, risks, side="right") - 1, 0, bins - 1)
        self._current += np.bincount(index, minlength=bins)
        self._in_current += len(risks)
        if self._in_current >= WINDOW:
            self._previous, self._current, self._in_current = self._current, np.zeros_like(self._current), 0

    @property
    def live(self) -> np.ndarray:
        self._fold()
        return self._current + self._previous

    def psi(self) -> float:
        """PSI of the live window against training; NaN without a histogram or predictions."""
        return psi(self.expected, self.live) if self.expected is not None else math.nan

    def plot_png(self, model_version: str | None) -> bytes:
        """A PNG of the live score distribution against the training histogram."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        if self.edges is not None:
            widths = np.diff(self.edges)
            for counts, label, alpha in ((self.expected, "training", 0.5), (self.live, "live", 0.5)):
                share = counts / counts.sum() if counts.sum() else counts
                ax.bar(self.edges[:-1], share, width=widths, align="edge", alpha=alpha, label=label)
            ax.legend()
        ax.set_title(f"decline risk: live vs training ({model_version}), PSI={self.psi():.4f}")
        ax.set_xlabel("predicted decline risk")
        ax.set_ylabel("share")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        return buffer.getvalue()
