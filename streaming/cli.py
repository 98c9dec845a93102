"""`tripscore stream`: run the streaming job until SIGTERM/SIGINT (or, with --available-now, until caught up)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from runtime.config import load_settings

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
    p.add_argument("--write-batch", type=int, help="records per store write call (default 5000)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 disables (default 9108)")
    p.set_defaults(func=_stream)


def _stream(args: argparse.Namespace) -> int:
    from runtime.kafka_clients import check_access
    from runtime.retry import GaveUp
    from runtime.spark import spark_session
    from streaming.job import LAUNCH_CONF, StreamOptions, run, stream_conf

    settings = load_settings()
    options = StreamOptions.from_settings(
        settings, topic=args.topic, checkpoint=args.checkpoint, starting_offsets=args.starting_offsets,
        max_offsets_per_trigger=args.max_offsets_per_trigger, trigger_ms=args.trigger_ms,
        available_now=args.available_now, watermark_s=args.watermark_s, partitions=args.partitions,
        write_batch=args.write_batch, metrics_port=args.metrics_port,
    )
    check_access(settings)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("%s received", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    spark = spark_session(settings, "tripscore-stream", **stream_conf(options), **LAUNCH_CONF)
    try:
        run(spark, settings, options, stop)
    except GaveUp as exc:
        log.error("stream stopped: %s", exc)
        return 1
    finally:
        spark.stop()
    return 0
