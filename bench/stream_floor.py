"""The Spark floor for `bench/stream.py`: the stream's own Kafka source, trigger and partitions, and its records
decoded and validated as the update does (`streaming.parse.event_times`), into a sink that only counts (no store, no
dead letters), so Spark's own cost per micro-batch is on record.

    python -m bench.stream_floor COUNTS_FILE [tripscore stream flags]     # with TRIPSCORE_* settings

Each micro-batch appends one JSON line to COUNTS_FILE: {"batch", "done_ms", "ts_counts": [[ts_ms, events], ...]};
an event's lag is `done_ms` minus its send time. Debug logging, as `tripscore -v stream`: the same breakdown lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.compute as pc

from runtime.config import load_settings
from streaming.cli import register, stop_on_signals, stop_spark, stream_options
from streaming.job import drive, job_session, raw_stream, stream_session
from streaming.metrics import SinkStats, StreamMetrics, lag_quantiles
from streaming.parse import event_times
from streaming.sink import BatchSink
from tripscore.cli import configure_logging


class CountingSink(BatchSink):
    """Counts each micro-batch's events by event time into `out`; writes nothing else."""

    def __init__(self, metrics: StreamMetrics, out: TextIO) -> None:
        super().__init__(metrics.observe_sink)
        self.out = out

    def write(self, table: pa.Table, batch_id: int) -> SinkStats:
        done_ms = time.time_ns() // 1_000_000
        times = table.column("event_ms")
        counts = pc.value_counts(times).to_pylist()
        ts_counts = [[c["values"], c["counts"]] for c in counts if c["values"] is not None]
        self.out.write(json.dumps({"batch": batch_id, "done_ms": done_ms, "ts_counts": ts_counts}) + "\n")
        self.out.flush()
        lags = [done_ms - ts for ts, n in ts_counts for _ in range(n)]
        return SinkStats(batch_id=batch_id, drivers=0, written=0, invalid=times.null_count, late=0,
                         duplicates=0, lag_s=lag_quantiles(lags))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.stream_floor")
    register(parser.add_subparsers())
    counts_path, args = Path(argv[0]), parser.parse_args(["stream", *argv[1:]])
    configure_logging(verbose=True)
    settings = load_settings()
    options = stream_options(settings, args)
    stop = stop_on_signals()
    spark = job_session(settings, options, "tripscore-stream-floor")
    stop_on_signals(stop)
    try:
        session = stream_session(spark, options)
        metrics = StreamMetrics(options.metrics_port, settings.web_bind)
        with counts_path.open("a") as out:
            drive(raw_stream(session, settings, options).mapInArrow(event_times, "event_ms long"), options,
                  CountingSink(metrics, out), metrics, stop)
    finally:
        stop_spark(spark, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
