"""Online-store benchmark (docs/spec.md §7): load N drivers, time single and batch-50 reads of the served bins, the
batch read as the scorer's matrix (`read_matrix`), writes; the batch reads against the bare client (the raw `sqlite3`
statement, or `client.batch_read` on Aerospike).

    python bench/store.py --backend sqlite --drivers 1000000
    TRIPSCORE_AEROSPIKE_HOSTS=127.0.0.1:3000 python bench/store.py --backend aerospike

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from features.derive import STORED_COLUMNS as READ_BINS  # what the scorer reads
from features.fold import DAY_MS, DriverState
from featurestore.base import OnlineStore, Record, now_ms
from runtime.config import load_settings
from schemas.features import RECORD_SET

TARGETS = {"sqlite": {"ratio_vs_raw": 1.2}, "aerospike": {"batch50_p99_ms": 1.0, "ratio_vs_raw": 1.2}}
POOL = 2_000  # distinct folded histories; drivers reuse them with their own event times
BENCH_TIMEOUT_MS = 1_000  # measure latency, not the serving deadline (a timed-out read would end the run)


def _history(rng: random.Random, start_ms: int) -> list[tuple[int, str, str, float | None]]:
    """A plausible shift of one driver: offers answered or declined, trips completed and rated."""
    events: list[tuple[int, str, str, float | None]] = []
    ts = start_ms
    events.append((ts, "e0", "shift_started", None))
    for i in range(rng.randint(1, 30)):
        ts += rng.randint(60_000, 40 * 60_000)
        events.append((ts, f"o{i}", "trip_offered", None))
        ts += rng.randint(2_000, 60_000)
        if rng.random() < 0.25:
            events.append((ts, f"d{i}", "offer_declined", None))
            continue
        events.append((ts, f"a{i}", "offer_accepted", None))
        ts += rng.randint(5 * 60_000, 40 * 60_000)
        events.append((ts, f"c{i}", "trip_completed", None))
        if rng.random() < 0.6:
            events.append((ts + 1_000, f"r{i}", "trip_rated", float(rng.randint(3, 5))))
    if rng.random() < 0.3:
        events.append((ts + 60_000, "e1", "shift_ended", None))
    return events


def driver_records(drivers: int, seed: int) -> Iterator[Record]:
    """`drivers` records `d<i>` folded from realistic histories, with event times in the last day."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    pool = []
    for _ in range(POOL):
        pool.append(DriverState().apply_all(_history(rng, now - DAY_MS)).to_bins())
    for i in range(drivers):
        bins = dict(pool[i % POOL])
        bins["_event_ms"] = now - rng.randint(0, DAY_MS // 2)
        yield f"d{i}", bins


def load(store: OnlineStore, drivers: int, chunk: int, seed: int) -> float:
    """Write every driver in bulk writes of `chunk`; returns records written per second."""
    batch: list[Record] = []
    elapsed = 0.0
    written = 0
    with tqdm(total=drivers, unit="rec", desc=f"load {store.backend}", file=sys.stderr) as bar:
        for record in driver_records(drivers, seed):
            batch.append(record)
            if len(batch) == chunk:
                written, elapsed = _timed_write(store, batch, written, elapsed)
                bar.update(len(batch))
                batch = []
        if batch:
            written, elapsed = _timed_write(store, batch, written, elapsed)
            bar.update(len(batch))
    return written / elapsed


def _timed_write(store: OnlineStore, batch: list[Record], written: int, elapsed: float) -> tuple[int, float]:
    start = time.perf_counter()
    result = store.write(batch)
    return written + result.written, elapsed + time.perf_counter() - start


def timings_ms(calls: list[Callable[[Any], Any]], args: list[list[Any]], warmup: int) -> list[np.ndarray]:
    """Milliseconds per call of `calls[j](args[j][i])`, interleaved (and rotated) so all see the same noise."""
    for call, call_args in zip(calls, args, strict=True):
        for arg in call_args[:warmup]:
            call(arg)
    out = [np.empty(len(call_args)) for call_args in args]
    clock = time.perf_counter_ns
    order = list(range(len(calls)))
    for i in range(len(args[0])):
        for j in order[i % len(order):] + order[: i % len(order)]:
            start = clock()
            calls[j](args[j][i])
            out[j][i] = clock() - start
    return [samples / 1e6 for samples in out]


def percentiles(samples: np.ndarray) -> dict[str, float]:
    """p50, p99 and p99.9 in ms, rounded to microseconds."""
    p50, p99, p999 = np.percentile(samples, [50, 99, 99.9])
    return {"p50": round(float(p50), 4), "p99": round(float(p99), 4), "p99.9": round(float(p999), 4)}


def open_bench_store(backend: str, path: Path, set_prefix: str, keep: bool) -> OnlineStore:
    """A store separate from the default one (its own SQLite file or Aerospike sets), emptied unless `keep`."""
    if backend == "sqlite":
        from featurestore.sqlite import SQLiteStore

        for suffix in ("", "-wal", "-shm") if not keep else ():
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return SQLiteStore(path)
    from featurestore.aerospike import AerospikeStore

    settings = load_settings(store="aerospike", aerospike_timeout_ms=BENCH_TIMEOUT_MS)
    store = AerospikeStore(settings, set_prefix=set_prefix)
    if not keep:
        store.client().truncate(store.namespace, store.record_set, 0)  # records written from now on are kept
    return store


def raw_sqlite_read(path: Path, batch: int) -> Callable[[list[str]], list[tuple]]:
    """The bare `sqlite3` statement of a batch read (its own connection, rows as tuples): the client's floor."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    columns = ", ".join(f'"{name}"' for name in READ_BINS)
    sql = (f'SELECT {columns}, entity_id FROM "{RECORD_SET}" WHERE entity_id IN ({", ".join("?" * batch)}) '
           f"AND _expires_ms > ?")
    return lambda ids: connection.execute(sql, (*ids, now_ms())).fetchall()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "aerospike"), default="sqlite")
    parser.add_argument("--drivers", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50, help="ids per batch read")
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--write-chunk", type=int, default=5_000)
    parser.add_argument("--path", type=Path, default=None, help="SQLite file (default <home>/bench/store.db)")
    parser.add_argument("--set-prefix", default="bench-", help="Aerospike set prefix")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-load", action="store_true", help="reuse the drivers of an earlier --keep-data run")
    parser.add_argument("--keep-data", action="store_true", help="leave the Aerospike bench set filled at exit")
    args = parser.parse_args(argv)

    store = open_bench_store(args.backend, args.path or load_settings().home / "bench" / "store.db", args.set_prefix,
                             keep=args.skip_load)
    writes_per_s = None if args.skip_load else load(store, args.drivers, args.write_chunk, args.seed)

    rng = random.Random(args.seed + 1)
    ids = [f"d{i}" for i in range(args.drivers)]
    singles = [[rng.choice(ids)] for _ in range(args.iterations)]
    batches = [rng.sample(ids, args.batch) for _ in range(args.iterations)]
    rows = store.read(batches[0], READ_BINS)
    assert all(row.found for row in rows), "a loaded driver reads as absent"

    def ours_read(entity_ids: list[str]) -> Any:
        return store.read(entity_ids, READ_BINS)

    def ours_matrix(entity_ids: list[str]) -> Any:
        return store.read_matrix(entity_ids, READ_BINS)

    calls, call_args = [ours_read, ours_read, ours_matrix], [singles, batches, batches]
    if args.backend == "aerospike":
        client, bins = store.client(), list(READ_BINS)
        calls.append(lambda keys: client.batch_read(keys, bins))
        call_args.append([[(store.namespace, store.record_set, i) for i in batch] for batch in batches])
    else:
        calls.append(raw_sqlite_read(store.path, args.batch))
        call_args.append(batches)
    get1, batch50, matrix50, *raw_list = (percentiles(samples) for samples in timings_ms(calls, call_args,
                                                                                        args.warmup))
    raw = raw_list[0] if raw_list else None
    result = {
        "bench": "store",
        "backend": args.backend,
        "drivers": args.drivers,
        "get1_p50_ms": get1["p50"],
        "get1_p99_ms": get1["p99"],
        "batch50_p50_ms": batch50["p50"],
        "batch50_p99_ms": batch50["p99"],
        "writes_per_s": round(writes_per_s) if writes_per_s else None,
        "matrix50_p50_ms": matrix50["p50"],
        "matrix50_p99_ms": matrix50["p99"],
        "raw_batch50_p99_ms": raw["p99"] if raw else None,
        "ratio_vs_raw": round(batch50["p99"] / raw["p99"], 3) if raw else None,
        "matrix_ratio_vs_raw": round(matrix50["p99"] / raw["p99"], 3) if raw else None,
    }
    print(f"{'metric':<22}{'p50 ms':>10}{'p99 ms':>10}{'p99.9 ms':>10}")
    for name, stats in (("get 1", get1), (f"batch {args.batch}", batch50), (f"matrix {args.batch}", matrix50),
                        (f"raw batch {args.batch}", raw)):
        if stats:
            print(f"{name:<22}{stats['p50']:>10.4f}{stats['p99']:>10.4f}{stats['p99.9']:>10.4f}")
    print(f"{'writes/s':<22}{result['writes_per_s']!s:>10}")
    print(f"load average during the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    for metric, target in TARGETS[args.backend].items():
        value = result[metric]
        print(f"target {metric} <= {target}: {value} {'OK' if value is not None and value <= target else 'MISSED'}")
    print(json.dumps(result))
    if args.backend == "aerospike" and not args.keep_data:  # don't hold a shared server's memory
        store.client().truncate(store.namespace, store.record_set, 0)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
