"""Subcommands `generate`, `backfill`, `dataset materialize`, `train` and `retrain`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from batch.options import DEFAULT_DATASET, DatasetError, TrainConfig
from modelregistry.export import ModelError
from runtime.config import Settings, load_settings
from runtime.kafka_clients import check_access
from schemas.messages import encode
from schemas.timestamps import check_ts

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
CITY_FILE = "_city.json"  # next to the log; the leading underscore keeps Spark and pyarrow from reading it as data


def register(sub: argparse._SubParsersAction) -> None:
    """Add the batch commands."""
    gen = sub.add_parser("generate", help="simulate a city: Parquet event log, score requests, optional Kafka replay")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--drivers", type=int, default=1000, help="drivers in the city (default 1000)")
    gen.add_argument("--days", type=int, default=7, help="simulated days (default 7)")
    gen.add_argument("--events", type=int, help="approximate event count; sizes the city instead of --drivers")
    gen.add_argument("--start", default="2024-06-03T00:00:00Z", help="first day: an RFC 3339 date-time or epoch ms")
    gen.add_argument("--out", type=Path, help="event log folder (default <home>/events)")
    gen.add_argument("--requests", type=int, default=0, help="also write N ScoreRequests drawn from the city")
    gen.add_argument("--requests-out", type=Path, help="score requests JSONL (default <home>/requests.jsonl)")
    gen.add_argument("--workers", type=int, help="simulation processes (default: all cores for big cities)")
    gen.add_argument("--to-kafka", action="store_true", help="replay the events to the trip-events topic")
    gen.add_argument("--rate", type=float, default=1000.0, help="replay events per second (<= 0: unthrottled)")
    gen.add_argument("--bad", type=int, default=0, help="invalid events to plant in the replay (DLQ tests)")
    gen.add_argument("--live-days", type=int, default=0,
                     help="keep the last N days out of the Parquet log; with --to-kafka only they are replayed")
    gen.add_argument("--live-out", type=Path, help="with --live-days: also write those days' events to this folder")
    gen.set_defaults(func=_generate)

    bf = sub.add_parser("backfill", help="fold the event log into driver records and bulk-write them to the store")
    bf.add_argument("--events", type=Path, nargs="+",
                    help="Parquet event-log folders, together each driver's whole log (default <home>/events)")
    bf.add_argument("--batch-size", type=int, default=2000, help="records per store write (default 2000)")
    bf.set_defaults(func=_backfill)

    dataset = sub.add_parser("dataset", help="training datasets")
    dataset_sub = dataset.add_subparsers(dest="dataset_command", required=True)
    mat = dataset_sub.add_parser("materialize", help="point-in-time examples, one per offer (docs/spec.md §3.3)")
    mat.add_argument("--name", default=DEFAULT_DATASET, help=f"dataset name (default {DEFAULT_DATASET})")
    mat.add_argument("--events", type=Path, help="Parquet event log (default <home>/events)")
    mat.set_defaults(func=_materialize)

    tr = sub.add_parser("train", help="train the MLlib model on a dataset and save a new model version")
    tr.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset name (default {DEFAULT_DATASET})")
    _train_flags(tr)
    tr.set_defaults(func=_train)

    re = sub.add_parser("retrain", help="materialize + train + promote if at least as good; prints one JSON line "
                                        "(exit 0 promoted, 3 kept, 1 failed)")
    re.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset name (default {DEFAULT_DATASET})")
    re.add_argument("--events", type=Path, help="Parquet event log (default <home>/events)")
    _train_flags(re)
    re.set_defaults(func=_retrain)


def _train_flags(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument("--holdout-fraction", type=float, default=defaults.holdout_fraction,
                        help="latest share of offers held out (default 0.2)")
    parser.add_argument("--max-iter", type=int, default=defaults.max_iter)
    parser.add_argument("--reg-param", type=float, default=defaults.reg_param)


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(holdout_fraction=args.holdout_fraction, max_iter=args.max_iter, reg_param=args.reg_param)


def _events_path(settings: Settings, path: Path | None) -> Path:
    return path or settings.home / "events"


def _spark(settings: Settings, app: str):  # noqa: ANN202 - pyspark is imported lazily (slow to import)
    from runtime.spark import spark_session

    started = time.perf_counter()
    spark = spark_session(settings, app)
    log.info("Spark session ready in %.1f s (%s)", time.perf_counter() - started, spark.sparkContext.master)
    return spark


def user_errors() -> tuple[type[Exception], ...]:
    """The errors a batch command reports as one message (imported when a command fails, not at start-up)."""
    from kafka.errors import KafkaError

    from batch.eventlog import EventLogError

    return EventLogError, DatasetError, ModelError, ValueError, FileNotFoundError, KafkaError


def _run(fn):  # noqa: ANN001, ANN202 - decorator
    """Turn the user errors of a command into one message and exit code 1."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args, load_settings())
        except user_errors() as exc:
            print(f"tripscore {args.command}: error: {exc}", file=sys.stderr)
            return 1

    return wrapper


@_run
def _generate(args: argparse.Namespace, settings: Settings) -> int:
    import pyarrow.compute as pc

    from batch.eventlog import write_events
    from batch.generate import CityConfig, drivers_for_events, score_requests, simulate

    start_ms, problem = check_ts(int(args.start) if args.start.isdigit() else args.start)
    if start_ms is None:
        raise ValueError(f"--start {args.start!r}: {problem}")
    if args.to_kafka:
        check_access(settings)
    drivers = drivers_for_events(args.events, args.days) if args.events else args.drivers
    config = CityConfig(seed=args.seed, drivers=drivers, days=args.days, start_ms=start_ms)
    started = time.perf_counter()
    city = simulate(config, progress=True, workers=args.workers)
    seconds = time.perf_counter() - started
    out = args.out or settings.home / "events"
    summary = city.summary()
    history, live, cutoff = city.events, city.events, city.end_ms
    if args.live_days:
        cutoff = start_ms + (args.days - args.live_days) * DAY_MS
        history = city.events.filter(pc.less(city.events.column("ts_ms"), cutoff))
        live = city.events.filter(pc.greater_equal(city.events.column("ts_ms"), cutoff))
        summary["history_until_ms"] = cutoff
        if args.live_out:
            write_events(live, args.live_out)
    write_events(history, out)
    summary["generate_seconds"] = seconds
    (out / CITY_FILE).write_text(json.dumps(summary, indent=2))
    print(f"generated {city.events.num_rows:,} events ({drivers:,} drivers x {args.days} days, {city.offers:,} "
          f"offers, decline rate {summary['decline_rate'] or 0:.3f}) in {seconds:.1f} s "
          f"= {city.events.num_rows / seconds:,.0f} events/s")
    print(f"oracle AUC {summary['oracle_auc'] or float('nan'):.4f}; event log {out} ({history.num_rows:,} events), "
          f"summary {out / CITY_FILE}")
    if args.requests:
        path = args.requests_out or settings.home / "requests.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        requests = score_requests(city.driver_ids, args.requests, seed=args.seed + 1, start_ms=cutoff)
        path.write_bytes(b"\n".join(encode(r) for r in requests) + b"\n")
        print(f"{len(requests):,} score requests -> {path}")
    if args.to_kafka:
        from batch.eventlog import to_messages
        from batch.replay import replay

        result = replay(to_messages(live), live.num_rows, settings, settings.topic_trip_events, args.rate,
                        bad=args.bad)
        print(result.line(settings.topic_trip_events))
    return 0


@_run
def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    from batch.backfill import backfill

    result = backfill(_spark(settings, "tripscore-backfill"), settings, args.events or [settings.home / "events"],
                      batch_size=args.batch_size)
    print(result.line())
    return 0


@_run
def _materialize(args: argparse.Namespace, settings: Settings) -> int:
    from batch.materialize import materialize
    from featurestore import open_store

    result = materialize(_spark(settings, "tripscore-materialize"), open_store(settings),
                         _events_path(settings, args.events), settings.datasets_dir, args.name)
    print(result.line())
    return 0


@_run
def _train(args: argparse.Namespace, settings: Settings) -> int:
    from batch.train import train

    result = train(_spark(settings, "tripscore-train"), settings.datasets_dir, settings.models_dir, args.dataset,
                   _config(args))
    print(result.line())
    print(f"promote it with: tripscore models promote {result.version}")
    return 0


@_run
def _retrain(args: argparse.Namespace, settings: Settings) -> int:
    from batch.retrain import retrain
    from featurestore import open_store

    result, verdict = retrain(_spark(settings, "tripscore-retrain"), open_store(settings),
                              _events_path(settings, args.events), settings.datasets_dir, settings.models_dir,
                              args.dataset, _config(args))
    log.info(verdict.line())
    print(encode(verdict.outcome(args.dataset, result.export.metrics)).decode())
    return verdict.exit_code
