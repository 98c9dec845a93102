"""Batch benchmark (docs/spec.md §7): generate a city, backfill it into SQLite, materialize the dataset, train.

    python bench/batch.py --events 1000000

Prints a table against the targets; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

# This script is named like the `batch` package: drop its own folder from the path, import the package in main().
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

BACKFILL_TARGET_EPS = 100_000
TRAIN_TARGET_S = 120.0  # for 1 M examples
AUC_TARGET_RATIO = 0.97
DATASET = "bench-trip-decline-risk"
WARMUP_EVENTS = 200_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="approximate events to generate")
    parser.add_argument("--days", type=int, default=14, help="simulated days (default 14)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path(".local/bench-batch"), help="scratch folder (wiped)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="time the jobs cold (by default small warm-up jobs first start the Python workers and "
                             "warm the JVM's JIT, as in any long-running Spark application)")
    args = parser.parse_args(argv)

    from batch.backfill import backfill
    from batch.eventlog import write_events
    from batch.generate import CityConfig, drivers_for_events, simulate
    from batch.materialize import materialize
    from batch.train import train
    from featurestore import open_store
    from runtime.config import load_settings
    from runtime.spark import spark_session

    shutil.rmtree(args.workdir, ignore_errors=True)
    settings = load_settings(home=args.workdir, sqlite_path=args.workdir / "features.db",
                             models_dir=args.workdir / "models", datasets_dir=args.workdir / "datasets")
    config = CityConfig(seed=args.seed, drivers=drivers_for_events(args.events, args.days), days=args.days)
    started = time.perf_counter()
    city = simulate(config, progress=True)
    generate_s = time.perf_counter() - started
    events = args.workdir / "events"
    write_events(city.events, events)
    print(f"generated {city.events.num_rows:,} events of {config.drivers:,} drivers in {generate_s:.1f} s")

    spark = spark_session(settings, "tripscore-bench-batch")
    if not args.no_warmup:
        warm = args.workdir / "warmup"
        write_events(city.events.slice(0, WARMUP_EVENTS), warm / "events")
        warm_settings = settings.with_overrides(sqlite_path=warm / "features.db")
        backfill(spark, warm_settings, warm / "events", progress=False)
        materialize(spark, open_store(warm_settings), warm / "events", warm / "datasets", "warmup", progress=False)
        train(spark, warm / "datasets", warm / "models", "warmup", progress=False)
        print(f"warm-up jobs (backfill, materialize, train) on {WARMUP_EVENTS:,} events done")
    filled = backfill(spark, settings, events)
    print(filled.line())
    made = materialize(spark, open_store(settings), events, settings.datasets_dir, DATASET)
    print(made.line())
    trained = train(spark, settings.datasets_dir, settings.models_dir, DATASET)
    print(trained.line())
    spark.stop()

    m = trained.export.metrics
    auc, oracle = m["auc"], m.get("oracle_auc")
    ratio = auc / oracle if oracle else float("nan")
    train_s = m["train_seconds"]
    train_s_per_1m = train_s * 1_000_000 / m["train_rows"]
    rows = [
        ("generate", f"{generate_s:.1f} s ({city.events.num_rows / generate_s:,.0f} events/s)", "well under 60 s/1 M",
         generate_s * 1_000_000 / city.events.num_rows < 60),
        ("backfill (SQLite)", f"{filled.events_per_s:,.0f} events/s", f">= {BACKFILL_TARGET_EPS:,} events/s",
         filled.events_per_s >= BACKFILL_TARGET_EPS),
        ("materialize", f"{made.rows_per_s:,.0f} rows/s", "-", True),
        ("train", f"{train_s:.1f} s on {m['train_rows']:,} rows (~{train_s_per_1m:.0f} s per 1 M)",
         f"<= {TRAIN_TARGET_S:.0f} s per 1 M", train_s_per_1m <= TRAIN_TARGET_S),
        ("AUC vs oracle", f"{auc:.4f} / {oracle:.4f} = {ratio:.3f}", f">= {AUC_TARGET_RATIO}",
         ratio >= AUC_TARGET_RATIO),
    ]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nload average {load} on {os.cpu_count()} cores; {'cold' if args.no_warmup else 'after warm-up'}")
    print(f"{'stage':20} {'measured':48} {'target':24} ok")
    for stage, measured, target, ok in rows:
        print(f"{stage:20} {measured:48} {target:24} {'yes' if ok else 'NO'}")
    print(json.dumps({
        "bench": "batch",
        "events": city.events.num_rows,
        "generate_s": round(generate_s, 2),
        "backfill_eps": round(filled.events_per_s),
        "materialize_rows_per_s": round(made.rows_per_s),
        "train_rows": m["train_rows"],
        "train_s": round(train_s, 2),
        "auc": round(auc, 5),
        "oracle_auc": round(oracle, 5) if oracle else None,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
