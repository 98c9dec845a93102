"""`tripscore score`: run the scoring worker (flags override `TRIPSCORE_*` settings)."""

from __future__ import annotations

import argparse
from pathlib import Path

from runtime.config import load_settings
from scorer.reader import READ_MODES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `score` command."""
    score = subparsers.add_parser("score", help="run the Faust scorer worker (score-requests -> risk-scores)")
    score.add_argument("--workers", dest="scorer_workers", type=int,
                       help="worker processes in the consumer group, worker i on web port + i (default 1)")
    score.add_argument("--concurrency", dest="scorer_concurrency", type=int,
                       help="agent actors, each answering its own batches (default 1)")
    score.add_argument("--batch-max", dest="scorer_batch_max", type=int,
                       help="requests answered together at most (default 16)")
    score.add_argument("--batch-wait-ms", dest="scorer_batch_wait_ms", type=float,
                       help="how long the agent gathers requests into one batch (default 2, at least 0.1)")
    score.add_argument("--read-mode", dest="scorer_read_mode", choices=READ_MODES,
                       help="feature read on the event loop or in a thread pool (auto: inline for SQLite)")
    score.add_argument("--read-threads", dest="scorer_read_threads", type=int, help="read pool size (default 4)")
    score.add_argument("--deadline-ms", dest="store_deadline_ms", type=float, help="feature read deadline (20)")
    score.add_argument("--web-port", dest="scorer_web_port", type=int, help="/metrics and /health port (6066)")
    score.add_argument("--app-id", dest="scorer_app_id", help="Faust app id = consumer group (tripscore-scorer)")
    score.add_argument("--models-dir", dest="models_dir", type=Path, help="model registry folder (models)")
    score.add_argument("--drift-plot", type=Path, help="write a PNG of live vs training scores at shutdown")
    score.add_argument("--loglevel", default="info", help="worker log level (default info)")
    score.set_defaults(func=_score)


def _score(args: argparse.Namespace) -> int:
    names = ("scorer_workers", "scorer_concurrency", "scorer_batch_max", "scorer_batch_wait_ms", "scorer_read_mode",
             "scorer_read_threads", "store_deadline_ms", "scorer_web_port", "scorer_app_id", "models_dir")
    overrides = {name: value for name in names if (value := getattr(args, name)) is not None}
    settings = load_settings(**overrides)
    if settings.scorer_workers > 1:
        from scorer.workers import run_workers

        return run_workers(settings, overrides, args.loglevel, args.drift_plot)
    import faust

    from runtime.kafka_clients import check_access
    from runtime.log_limits import limit_repeats
    from scorer.app import build_app

    check_access(settings)
    app = build_app(settings, drift_plot=args.drift_plot)
    limit_repeats("aiokafka")  # a broker that is down: the same few errors ten times a second per client
    worker = faust.Worker(app, loglevel=args.loglevel)
    worker.spinner = None  # at loglevel >= warning its handler pins the root logger at DEBUG: costly records
    worker.execute_from_commandline()
    return 0
