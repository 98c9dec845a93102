"""Per-micro-batch metrics of the stream: one log line per batch and Prometheus gauges and counters on a port."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger("streaming")
OUTCOMES = ("invalid", "late", "duplicate")
PYTHON_TIMES = {"python": "pythonTotalTime", "python code": "pythonProcessingTime"}
"""SQL metrics of a Python plan node (ms, summed over its tasks) that `python_seconds` reads: the time to run the
workers (start, data exchange and code) and the part executing Python code."""


@dataclass
class SinkStats:
    """What foreachBatch did with one micro-batch; the sink adds its timings."""

    batch_id: int
    records: int
    written: int
    invalid: int
    late: int
    duplicates: int
    lag_s: tuple[float, float, float] | None  # event time to store write: p50, p99, max; None without records
    evicted: int = 0  # drivers whose state was dropped as idle (`driver_state.evictable`)
    compute_s: float = 0.0  # the micro-batch's Spark job: source read, parse, shuffle, state operator
    write_s: float = 0.0  # DLQ and store writes
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
    """Where one micro-batch's time went, in ms: Spark's `durationMs` and state operator figures with the sink's
    timings. `execute` is the batch's Spark job (wall time); `state`, `state_commit` and the `python` figures are
    summed over its tasks, which run in parallel; `other` is the trigger's time outside the wall-time phases."""
    durations, operators = progress["durationMs"], progress["stateOperators"]
    phases = {
        "planning": durations.get("queryPlanning", 0),
        "source": durations.get("latestOffset", 0) + durations.get("getBatch", 0),
        "execute": round(stats.compute_s * 1000),
        "state": sum(op["allUpdatesTimeMs"] + op["allRemovalsTimeMs"] for op in operators),
        "state_commit": sum(op["commitTimeMs"] for op in operators),
        **{name: round(seconds * 1000) for name, seconds in python_s.items()},
        "sink": round(stats.write_s * 1000),
        "commit": durations.get("walCommit", 0) + durations.get("commitOffsets", 0),
    }
    wall = ("planning", "source", "execute", "sink", "commit")
    phases["other"] = durations.get("triggerExecution", 0) - sum(phases[name] for name in wall)
    phases["total"] = durations.get("triggerExecution", 0)
    return phases


def lag_quantiles(lags_ms: Sequence[int]) -> tuple[float, float, float] | None:
    """p50, p99 and max of lags in milliseconds, as seconds."""
    if not lags_ms:
        return None
    p50, p99 = np.percentile(np.asarray(lags_ms, dtype=np.float64), [50, 99]) / 1000.0
    return float(p50), float(p99), max(lags_ms) / 1000.0


class StreamMetrics:
    """Joins the sink's stats with Spark's query progress; logs each batch once and updates Prometheus, served on
    `bind:port` (`TRIPSCORE_WEB_BIND`) unless `port` is 0."""

    def __init__(self, port: int, bind: str) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("tripscore_stream_events", "trip events by outcome (in = read from Kafka)",
                              ["outcome"], registry=self.registry)
        self.records = Counter("tripscore_stream_records_written", "driver records written to the store",
                               registry=self.registry)
        self.batches = Counter("tripscore_stream_batches", "micro-batches completed", registry=self.registry)
        self.evicted = Counter("tripscore_stream_states_evicted", "drivers' states dropped as idle",
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
        for outcome in OUTCOMES:
            self.events.labels(outcome).inc(getattr(stats, "duplicates" if outcome == "duplicate" else outcome))
        self.records.inc(stats.written)
        self.evicted.inc(stats.evicted)
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
            log.debug("batch %d durations (ms) %s; state operators %s", batch_id, dict(progress["durationMs"]),
                      [{k: op[k] for k in ("numRowsTotal", "numRowsUpdated", "memoryUsedBytes", "customMetrics")}
                       for op in progress["stateOperators"]])
        lag = "lag -" if stats.lag_s is None else "lag p50 {:.2f} s p99 {:.2f} s max {:.2f} s".format(*stats.lag_s)
        log.info(
            "batch %d: in %d (%.0f/s), invalid %d, late %d, dup %d; records %d (written %d), states evicted %d; "
            "%.2f s (writes %.2f s, %.0f ev/s); %s",
            batch_id, rows, input_rate, stats.invalid, stats.late, stats.duplicates, stats.records, stats.written,
            stats.evicted, seconds, stats.write_s, processed_rate, lag,
        )

    def close(self) -> None:
        """Stop the metrics HTTP server."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
