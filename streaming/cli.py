"""`tripscore stream`: run the streaming job until SIGTERM/SIGINT (or, with --available-now, until caught up)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.config import Settings, load_settings

if TYPE_CHECKING:
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
    p.add_argument("--trigger-ms", type=int, help="processing-time trigger interval in ms (default 1000)")
    p.add_argument("--available-now", "--once", dest="available_now", action="store_true", default=None,
                   help="process what is in the topic now, then stop")
    p.add_argument("--watermark-s", type=float, help="event-time watermark delay in seconds (default 10)")
    p.add_argument("--partitions", type=int,
                   help="tasks per stage: Kafka partitions are coalesced to this many, and a new checkpoint's state "
                        "gets this many partitions (default 2)")
    p.add_argument("--state-buckets", type=int,
                   help="buckets the drivers' state is kept in, fixed by a new checkpoint (default: the checkpoint's, "
                        "64 for a new one; about 32 per partition)")
    p.add_argument("--state-idle-s", type=float,
                   help="a driver's state is dropped once its latest event is this far behind the watermark; its next "
                        "event starts from its store record (default 86400)")
    p.add_argument("--write-batch", type=int, help="records per store write call (default 5000)")
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
        available_now=args.available_now, watermark_s=args.watermark_s, partitions=args.partitions,
        state_buckets=args.state_buckets, state_idle_s=args.state_idle_s, write_batch=args.write_batch,
        metrics_port=args.metrics_port,
        spark_conf=tuple(args.conf) if args.conf else None,
    )


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM and SIGINT set (the query then stops between micro-batches)."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("%s received", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    return stop


def _stream(args: argparse.Namespace) -> int:
    from runtime.kafka_clients import check_access
    from runtime.retry import GaveUp
    from streaming.checkpoint import CheckpointMismatch
    from streaming.job import BadOption, job_session, run

    settings = load_settings()
    try:
        options = stream_options(settings, args)
    except BadOption as exc:
        log.error("stream not started: %s", exc)
        return 2
    check_access(settings)
    stop = stop_on_signals()
    spark = job_session(settings, options, "tripscore-stream")
    try:
        run(spark, settings, options, stop)
    except GaveUp as exc:
        log.error("stream stopped: %s", exc)
        return 1
    except CheckpointMismatch as exc:
        log.error("stream not started: %s", exc)
        return 2
    finally:
        spark.stop()
    return 0
