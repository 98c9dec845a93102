"""The scorer's Prometheus metrics, in one registry served at `/metrics` by the worker."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from schemas.messages import FEATURE_STATUSES, STRATEGIES
from scorer.rank import FALLBACK_REASONS, Ranking

FOLD_EVERY = 512
"""Requests' observations buffered before a bulk fold (every scrape folds too): one fold of many costs far less
than many small ones, and keeps numpy off the request path."""


class ArrayHistogram(Collector):
    """A histogram fed per request and folded into its buckets in bulk; observed and collected on the worker's
    event loop. Values below zero (an age from a clock behind the record's) count as zero."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry,
                 scale: float = 1.0) -> None:
        self.name, self.documentation, self.scale = name, documentation, scale
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last bucket is +Inf
        self.total = 0.0
        self._arrays: list[Sequence[float] | np.ndarray] = []
        self._scalars: list[float] = []
        registry.register(self)

    def observe(self, value: float) -> None:
        self._scalars.append(value)
        if len(self._scalars) >= FOLD_EVERY:
            self.fold()

    def observe_many(self, values: Sequence[float] | np.ndarray) -> None:
        self._arrays.append(values)
        if len(self._arrays) >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """Count every buffered value into the buckets."""
        parts = [*self._arrays, self._scalars]
        self._arrays, self._scalars = [], []
        values = np.maximum(np.concatenate(parts, dtype=np.float64), 0.0) * self.scale
        self.counts += np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.counts))
        self.total += float(values.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        self.fold()
        cumulative = np.cumsum(self.counts).tolist()
        names = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        yield HistogramMetricFamily(self.name, self.documentation, buckets=list(zip(names, cumulative, strict=True)),
                                    sum_value=self.total)


class LabelTally(Collector):
    """A counter with one label, fed whole lists of label values (`collections.Counter.update` counts in C)."""

    def __init__(self, name: str, documentation: str, label: str, values: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.tally = Tally(dict.fromkeys(values, 0))  # every series exists from the start
        registry.register(self)

    def add(self, labels: Sequence[str]) -> None:
        self.tally.update(labels)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in self.tally.items():
            family.add_metric([value], count)
        yield family


REGISTRY = CollectorRegistry()
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
AGE_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86_400, 7 * 86_400)
RISK_BUCKETS = tuple(i / 20 for i in range(1, 21))

FEATURE_READ = ArrayHistogram("tripscore_scorer_feature_read_seconds", "Batch feature read per request",
                              LATENCY_BUCKETS, REGISTRY)
MODEL = ArrayHistogram("tripscore_scorer_model_seconds", "Feature derivation, inference and ranking per request",
                       LATENCY_BUCKETS, REGISTRY)
PROCESSING = Histogram("tripscore_scorer_processing_seconds", "Request received to response acknowledged",
                       buckets=LATENCY_BUCKETS, registry=REGISTRY)
END_TO_END = Histogram("tripscore_scorer_end_to_end_seconds",
                       "Request's Kafka timestamp to response acknowledged (includes queueing)",
                       buckets=LATENCY_BUCKETS, registry=REGISTRY)
BATCH_SIZE = Histogram("tripscore_scorer_batch_size", "Requests the agent answered together",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=REGISTRY)
RESPONSES = Counter("tripscore_scorer_responses_total", "Responses by strategy", ["strategy"], registry=REGISTRY)
FALLBACKS = Counter("tripscore_scorer_fallbacks_total", "Distance-only answers by reason", ["reason"],
                    registry=REGISTRY)
CANDIDATES = LabelTally("tripscore_scorer_candidates", "Candidates by feature status", "status", FEATURE_STATUSES,
                        REGISTRY)
FEATURE_AGE = ArrayHistogram("tripscore_scorer_feature_age_seconds", "Read time minus the record's latest event",
                             AGE_BUCKETS, REGISTRY, scale=0.001)
DECLINE_RISK = ArrayHistogram("tripscore_scorer_decline_risk", "Model predictions served", RISK_BUCKETS, REGISTRY)
PSI = Gauge("tripscore_scorer_prediction_psi", "PSI of served predictions vs the model's training histogram",
            registry=REGISTRY)
MODEL_INFO = Gauge("tripscore_scorer_model_info", "1 for the model version in service", ["version"],
                   registry=REGISTRY)
MODEL_RELOADS = Counter("tripscore_scorer_model_reloads_total", "Model switches", registry=REGISTRY)
DEAD_LETTERS = Counter("tripscore_scorer_dead_letters_total", "Malformed requests dead-lettered", registry=REGISTRY)

# every series exists from the start (a zero, not an absent line), bound once: `labels()` costs per call
RESPONSES_BY_STRATEGY = {strategy: RESPONSES.labels(strategy) for strategy in STRATEGIES}
FALLBACKS_BY_REASON = {reason: FALLBACKS.labels(reason) for reason in FALLBACK_REASONS}


def record_ranking(ranking: Ranking, read_s: float, model_s: float) -> None:
    """Count one scored request."""
    FEATURE_READ.observe(read_s)
    MODEL.observe(model_s)
    RESPONSES_BY_STRATEGY[ranking.strategy].inc()
    if ranking.reason:
        FALLBACKS_BY_REASON[ranking.reason].inc()
    CANDIDATES.add(ranking.statuses)
    FEATURE_AGE.observe_many(ranking.ages_ms)
    DECLINE_RISK.observe_many(ranking.risks)


def set_model(version: str | None) -> None:
    """Expose the served version as the only `model_info` series."""
    MODEL_INFO.clear()
    if version:
        MODEL_INFO.labels(version).set(1)


def exposition() -> bytes:
    """The text exposition of every scorer metric."""
    return generate_latest(REGISTRY)
