"""Per-micro-batch metrics of the stream: one log line per batch and Prometheus gauges and counters on a port."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pyspark.sql.streaming import StreamingQuery

from streaming.source_lag import SourceLag

log = logging.getLogger("streaming")
OUTCOMES = {"invalid": "invalid", "late": "late", "duplicate": "duplicates", "replayed": "replayed"}
"""The `outcome` label of `tripscore_stream_events_total` for each count of `SinkStats` (besides "in")."""
PYTHON_TIMES = {"python": "pythonTotalTime", "python code": "pythonProcessingTime"}
"""SQL metrics of a Python plan node (ms, summed over its tasks) that `python_seconds` reads: the time to run the
workers (start, data exchange and code) and the part executing Python code."""


@dataclass
class SinkStats:
    """What one micro-batch did (summed over its partitions); the sink adds its timings."""

    batch_id: int
    drivers: int  # distinct drivers with valid events (per partition: a driver keyed to one partition counts once)
    written: int  # driver records written
    invalid: int
    late: int
    duplicates: int
    lag_s: tuple[float, float, float] | None  # event time to store write: p50, p99, max; None without records
    replayed: int = 0  # events the records already held (a replayed batch)
    lag_histogram: Mapping[int, int] = field(default_factory=dict)  # applied events by lag, `LAG_BUCKET_MS` wide
    conflicts: int = 0  # records read and folded again because another write moved them on
    task_ms: Mapping[str, float] = field(default_factory=dict)  # the update's phases, summed over partitions
    compute_s: float = 0.0  # the micro-batch's Spark job: source read, parse, store reads and writes, dead letters
    write_s: float = 0.0  # the sink's own work after it
    execution: Any = None  # the batch's executed query (a JVM object), kept for the debug breakdown's Python times


def _plan_nodes(node: Any) -> Iterator[Any]:
    yield node
    children = node.children()
    for i in range(children.size()):
        yield from _plan_nodes(children.apply(i))


def last_execution(query: StreamingQuery) -> Any:
    """The JVM object of the query's current micro-batch execution (None before the first)."""
    return query._jsq.streamingQuery().lastExecution()


def python_seconds(execution: Any) -> dict[str, float]:
    """Seconds the Python workers took in a micro-batch's execution (`last_execution`), summed over tasks:
    `PYTHON_TIMES` of each Python plan node, as {"python <node>": s, "python code <node>": s}. About a hundred
    calls into the JVM: made off the batch's path, when its progress is logged."""
    if execution is None:
        return {}
    times: dict[str, float] = {}
    for node in _plan_nodes(execution.executedPlan()):
        metrics = node.metrics()
        for label, name in PYTHON_TIMES.items():
            if (metric := metrics.get(name)).isDefined():
                key = f"{label} {node.nodeName()}"
                times[key] = times.get(key, 0.0) + metric.get().value() / 1000
    return times


def breakdown_ms(progress: Mapping[str, Any], stats: SinkStats, python_s: Mapping[str, float]) -> dict[str, int]:
    """Where one micro-batch's time went, in ms: Spark's `durationMs` with the sink's and the update's timings.
    `execute` is the batch's Spark job (wall time); the update's phases (`parse`, `read`, `fold`, `dlq`, `write`)
    and the `python` figures are summed over its tasks, which run in parallel; `other` is the trigger's time outside
    the wall-time phases."""
    durations = progress["durationMs"]
    phases = {
        "planning": durations.get("queryPlanning", 0),
        "source": durations.get("latestOffset", 0) + durations.get("getBatch", 0),
        "execute": round(stats.compute_s * 1000),
        **{name.removesuffix("_ms"): round(ms) for name, ms in stats.task_ms.items()},
        **{name: round(seconds * 1000) for name, seconds in python_s.items()},
        "sink": round(stats.write_s * 1000),
        "commit": durations.get("walCommit", 0) + durations.get("commitOffsets", 0),
    }
    wall = ("planning", "source", "execute", "sink", "commit")
    phases["other"] = durations.get("triggerExecution", 0) - sum(phases[name] for name in wall)
    phases["total"] = durations.get("triggerExecution", 0)
    return phases


LAG_BUCKET_MS = 10


def lag_histogram(lags_ms: Sequence[int]) -> dict[int, int]:
    """Lags counted in buckets of `LAG_BUCKET_MS` (by the bucket's lower end, in ms), for the debug log: a run's
    quantiles over every event, where the per-batch figures cannot be combined."""
    if len(lags_ms) == 0:
        return {}
    buckets, counts = np.unique(np.asarray(lags_ms, dtype=np.int64) // LAG_BUCKET_MS, return_counts=True)
    return {int(b) * LAG_BUCKET_MS: int(n) for b, n in zip(buckets, counts, strict=True)}


def lag_quantiles(lags_ms: Sequence[int]) -> tuple[float, float, float] | None:
    """p50, p99 and max of lags in milliseconds, as seconds."""
    if len(lags_ms) == 0:
        return None
    lags = np.asarray(lags_ms, dtype=np.float64)
    p50, p99 = np.percentile(lags, [50, 99]) / 1000.0
    return float(p50), float(p99), float(lags.max()) / 1000.0


class StreamMetrics:
    """Joins the sink's stats with Spark's query progress; logs each batch once and updates Prometheus, served on
    `bind:port` (`TRIPSCORE_WEB_BIND`) unless `port` is 0."""

    def __init__(self, port: int, bind: str, source_lag: SourceLag | None = None) -> None:
        self.registry = CollectorRegistry()
        self.source_lag = source_lag
        self._last_batch_at = time.time()  # the start counts as the first batch: a stream stuck from the start shows
        Gauge("tripscore_stream_last_batch_age_seconds", "seconds since the last micro-batch completed (at scrape "
              "time; the stream's start before the first)", registry=self.registry).set_function(
            lambda: time.time() - self._last_batch_at)
        if source_lag is not None:
            Gauge("tripscore_stream_offsets_behind", "records in the source topic the stream has not processed "
                  "(asked of Kafka at scrape time; NaN when it does not answer)",
                  registry=self.registry).set_function(source_lag.behind)
        self.events = Counter("tripscore_stream_events", "trip events by outcome (in = read from Kafka)",
                              ["outcome"], registry=self.registry)
        self.records = Counter("tripscore_stream_records_written", "driver records written to the store",
                               registry=self.registry)
        self.batches = Counter("tripscore_stream_batches", "micro-batches completed", registry=self.registry)
        self.conflicts = Counter("tripscore_stream_write_conflicts", "records read and folded again because "
                                 "another write moved them on (compare-and-set)", registry=self.registry)
        self.drivers = Gauge("tripscore_stream_batch_drivers", "distinct drivers in the last micro-batch",
                             registry=self.registry)
        self.batch_seconds = Gauge("tripscore_stream_batch_seconds", "processing time of the last micro-batch",
                                   registry=self.registry)
        self.input_rate = Gauge("tripscore_stream_input_rate", "events/s arriving (last batch)", registry=self.registry)
        self.processed_rate = Gauge("tripscore_stream_processed_rate", "events/s processed (last batch)",
                                    registry=self.registry)
        self.lag = Gauge("tripscore_stream_freshness_lag_seconds", "event time to store write, last batch",
                         ["quantile"], registry=self.registry)
        self._pending: dict[int, SinkStats] = {}
        self._lock = threading.Lock()
        self.last_batch = -1  # the last batch logged
        self._server = start_http_server(port, addr=bind, registry=self.registry)[0] if port else None
        if port:
            log.info("Prometheus metrics on %s:%d/metrics", bind, port)

    def observe_sink(self, stats: SinkStats) -> None:
        """Called by the sink when a batch is written; logged when its progress arrives."""
        for outcome, count in OUTCOMES.items():
            self.events.labels(outcome).inc(getattr(stats, count))
        self.records.inc(stats.written)
        self.conflicts.inc(stats.conflicts)
        self.drivers.set(stats.drivers)
        if stats.lag_s is not None:
            for name, value in zip(("0.5", "0.99", "max"), stats.lag_s, strict=True):
                self.lag.labels(name).set(value)
        with self._lock:
            self._pending[stats.batch_id] = stats

    def observe_progress(self, progress: Mapping[str, Any]) -> None:
        """Called with each `StreamingQueryProgress`; a batch with sink stats is counted and logged once."""
        with self._lock:
            batch_id = progress["batchId"]
            stats = self._pending.pop(batch_id, None)
            if stats is None or batch_id <= self.last_batch:
                return
            self.last_batch = batch_id
            self._last_batch_at = time.time()
        if self.source_lag is not None and progress.get("sources"):
            self.source_lag.update(progress["sources"][0]["endOffset"])
        rows = progress["numInputRows"]
        seconds = progress["durationMs"].get("triggerExecution", 0) / 1000.0
        input_rate, processed_rate = progress["inputRowsPerSecond"] or 0.0, progress["processedRowsPerSecond"] or 0.0
        self.events.labels("in").inc(rows)
        self.batches.inc()
        self.batch_seconds.set(seconds)
        self.input_rate.set(input_rate)
        self.processed_rate.set(processed_rate)
        if log.isEnabledFor(logging.DEBUG):
            breakdown = breakdown_ms(progress, stats, python_seconds(stats.execution))
            log.debug("batch %d breakdown (ms) %s", batch_id, json.dumps(breakdown))
            log.debug("batch %d lags (ms) %s", batch_id, json.dumps(stats.lag_histogram))
            log.debug("batch %d durations (ms) %s", batch_id, dict(progress["durationMs"]))
        lag = "lag -" if stats.lag_s is None else "lag p50 {:.2f} s p99 {:.2f} s max {:.2f} s".format(*stats.lag_s)
        log.info(
            "batch %d: in %d (%.0f/s), invalid %d, late %d, dup %d, replayed %d; drivers %d, written %d, "
            "conflicts %d; %.2f s (%.0f ev/s); %s",
            batch_id, rows, input_rate, stats.invalid, stats.late, stats.duplicates, stats.replayed, stats.drivers,
            stats.written, stats.conflicts, seconds, processed_rate, lag,
        )

    def close(self) -> None:
        """Stop the metrics HTTP server (and the source lag's Kafka client)."""
        if self.source_lag is not None:
            self.source_lag.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
