"""`tripscore stream`: run the streaming job until SIGTERM/SIGINT (or, with --available-now, until caught up)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.config import Settings, load_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from streaming.job import StreamOptions

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `stream` command."""
    p = subparsers.add_parser("stream", help="stream trip events from Kafka into the online feature store")
    p.add_argument("--topic", help="source topic (default TRIPSCORE_TOPIC_TRIP_EVENTS)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint folder (default <home>/checkpoints/stream)")
    p.add_argument("--starting-offsets", choices=("earliest", "latest"),
                   help="where a new checkpoint starts reading (default earliest)")
    p.add_argument("--max-offsets-per-trigger", type=int, help="events per micro-batch at most (default 200000)")
    p.add_argument("--trigger-ms", type=int, help="processing-time trigger interval in ms (default 500)")
    p.add_argument("--available-now", "--once", dest="available_now", action="store_true", default=None,
                   help="process what is in the topic now, then stop")
    p.add_argument("--lateness-s", type=float,
                   help="allowed lateness in seconds: a driver's events are final once this far behind its latest "
                        "event, and an event that sorts before a final one is dead-lettered as late (default 10)")
    p.add_argument("--partitions", type=int,
                   help="tasks per micro-batch: Kafka partitions are coalesced to this many (default 2)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 disables (default 9108)")
    p.add_argument("--conf", action="append", type=_spark_setting, metavar="KEY=VALUE",
                   help="a Spark setting over the job's own (repeatable), e.g. spark.sql.shuffle.partitions=4")
    p.set_defaults(func=_stream)


def _spark_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def stream_options(settings: Settings, args: argparse.Namespace) -> StreamOptions:
    """The run's options: settings overridden by the `stream` command's flags."""
    from streaming.job import StreamOptions

    return StreamOptions.from_settings(
        settings, topic=args.topic, checkpoint=args.checkpoint, starting_offsets=args.starting_offsets,
        max_offsets_per_trigger=args.max_offsets_per_trigger, trigger_ms=args.trigger_ms,
        available_now=args.available_now, lateness_s=args.lateness_s, partitions=args.partitions,
        metrics_port=args.metrics_port,
        spark_conf=tuple(args.conf) if args.conf else None,
    )


class QuietPy4J(logging.Filter):
    """Drops py4j's own records (it logs through the root logger too): once a stop is under way, a Spark call it cuts
    short is no error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("py4j") or f"{os.sep}py4j{os.sep}" in record.pathname)


QUIET_PY4J = QuietPy4J()


def quiet_spark_connections() -> None:
    """Once a stop is under way, the driver's accumulator server (a thread of this process) logs a connection the
    JVM cut, when the JVM goes first, at debug level instead of printing a traceback."""
    from pyspark import SparkContext

    server = getattr(SparkContext._active_spark_context, "_accumulatorServer", None)
    if server is not None:
        server.handle_error = lambda _request, address: log.debug("Spark's connection from %s closed", address)


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """An event that SIGTERM and SIGINT set (the query then stops between micro-batches); installed again on `stop`
    after the Spark session starts, which replaces the SIGINT handler with its own."""
    stop = stop or threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        if not stop.is_set():
            log.info("%s received: stopping", signal.Signals(signum).name)
        for handler in logging.getLogger().handlers:
            handler.addFilter(QUIET_PY4J)
        quiet_spark_connections()
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    return stop


def _stream(args: argparse.Namespace) -> int:
    from runtime.config import retired_settings
    from runtime.kafka_clients import check_access
    from runtime.retry import GaveUp
    from streaming.job import BadOption, job_session, run

    for line in retired_settings():
        log.warning(line)
    settings = load_settings()
    try:
        options = stream_options(settings, args)
    except BadOption as exc:
        log.error("stream not started: %s", exc)
        return 2
    check_access(settings)
    stop = stop_on_signals()
    spark = job_session(settings, options, "tripscore-stream")
    stop_on_signals(stop)
    try:
        run(spark, settings, options, stop)
    except GaveUp as exc:
        log.error("stream stopped: %s", exc)
        return 1
    finally:
        stop_spark(spark, stop)
    return 0


def stop_spark(spark: SparkSession, stop: threading.Event) -> None:
    """Stop Spark; after a stop signal, its JVM may be gone already (a signal to every process of the service)."""
    try:
        spark.stop()
    except Exception:
        if not stop.is_set():
            raise
        log.info("Spark had stopped already")
