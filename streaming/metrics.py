"""Per-micro-batch metrics of the stream: one log line per batch and Prometheus gauges and counters on a port."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

log = logging.getLogger("streaming")
OUTCOMES = ("invalid", "late", "duplicate")


@dataclass(frozen=True)
class SinkStats:
    """What foreachBatch did with one micro-batch."""

    batch_id: int
    records: int
    written: int
    invalid: int
    late: int
    duplicates: int
    lag_s: tuple[float, float, float] | None  # event time to store write: p50, p99, max; None without records
    write_s: float  # DLQ and store writes


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
            log.debug("batch %d durations (ms) %s; event time %s; state operators %s", batch_id,
                      dict(progress["durationMs"]), dict(progress["eventTime"]),
                      [{k: op[k] for k in ("numRowsTotal", "numRowsUpdated", "commitTimeMs", "memoryUsedBytes")}
                       for op in progress["stateOperators"]])
        lag = "lag -" if stats.lag_s is None else "lag p50 {:.2f} s p99 {:.2f} s max {:.2f} s".format(*stats.lag_s)
        log.info(
            "batch %d: in %d (%.0f/s), invalid %d, late %d, dup %d; records %d (written %d); "
            "%.2f s (writes %.2f s, %.0f ev/s); %s",
            batch_id, rows, input_rate, stats.invalid, stats.late, stats.duplicates, stats.records, stats.written,
            seconds, stats.write_s, processed_rate, lag,
        )

    def close(self) -> None:
        """Stop the metrics HTTP server."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
