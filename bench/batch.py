"""Batch benchmark (SPEC §7): generate a city, backfill it into SQLite, materialize the dataset, train.

    python bench/batch.py --events 1000000

Prints a table against the targets; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def cpu_seconds(root_pid: int | None = None) -> float:
    """CPU time used so far by this process, its reaped children and (on Linux) the process tree of `root_pid`
    (the Spark JVM with its Python workers): a load-independent measure next to wall-clock time."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    proc = Path("/proc")
    if root_pid is None or not proc.is_dir():
        return total
    stats: dict[int, list[str]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        if pid in stats:
            total += sum(int(x) for x in stats[pid][11:15]) / ticks  # utime, stime, cutime, cstime
    return total


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
    from tripscore.config import load_settings
    from tripscore.spark import spark_session

    shutil.rmtree(args.workdir, ignore_errors=True)
    settings = load_settings(home=args.workdir, sqlite_path=args.workdir / "features.db",
                             models_dir=args.workdir / "models", datasets_dir=args.workdir / "datasets")
    config = CityConfig(seed=args.seed, drivers=drivers_for_events(args.events, args.days), days=args.days)
    started, cpu = time.perf_counter(), cpu_seconds()
    city = simulate(config, progress=True)
    generate_s = time.perf_counter() - started
    cpu_s = {"generate": cpu_seconds() - cpu}
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
    jvm = spark.sparkContext._gateway.proc.pid
    cpu = cpu_seconds(jvm)
    filled = backfill(spark, settings, events)
    cpu_s["backfill"] = cpu_seconds(jvm) - cpu
    print(filled.line())
    cpu = cpu_seconds(jvm)
    made = materialize(spark, open_store(settings), events, settings.datasets_dir, DATASET)
    cpu_s["materialize"] = cpu_seconds(jvm) - cpu
    print(made.line())
    cpu = cpu_seconds(jvm)
    trained = train(spark, settings.datasets_dir, settings.models_dir, DATASET)
    cpu_s["train"] = cpu_seconds(jvm) - cpu  # the whole command: split, fit, holdout scoring, saving
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
    print(f"{'stage':20} {'measured':48} {'target':24} ok   cpu-s")
    for stage, measured, target, ok in rows:
        cpu_text = f"{cpu_s[stage.split()[0]]:.1f}" if stage.split()[0] in cpu_s else ""
        print(f"{stage:20} {measured:48} {target:24} {'yes' if ok else 'NO ':4} {cpu_text}")
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
