"""Streaming benchmark (docs/spec.md §7): throughput and event-to-visible lag of `tripscore stream` over a fleet of N
drivers, next to Spark's floor.

    python bench/stream.py --fleet 1000000 --events 150000 --rate 5000   # lag p99 at 5,000 events/s
    python bench/stream.py --fleet 1000000 --events 600000 --rate 0      # sustained throughput of a backlog

The fleet (`bench/fleet.py`): N drivers whose records are in the store before the run (backfilled), and events drawn
at real-time proportions, so a micro-batch touches about as many distinct drivers as it has events. The job's store
is a fresh SQLite file, or Aerospike when `AEROSPIKE_HOSTS` is set (sets of their own, emptied afterwards).

Two runs, each a subprocess on a fresh topic: the floor (`bench/stream_floor.py`: the same Kafka source, trigger,
partitions and decode into a sink that only counts) and the job (`tripscore -v stream`). A warm-up brings each to
steady state: 20,000 events at once, then, with a rate, `--warmup-s` seconds of events at that rate. Then the events
are produced at `--rate`: with a rate, the events due every 10 ms with `ts` = their send time; at 0, a backlog sent
at once with `ts` = the send time. Throughput is the events over the time from the first send to the last write; the
job's lag is each applied event's send time to its record's write, as the job logs it (`batch N lags (ms)`, 10 ms
buckets), the floor's send time to the end of its sink; a sample of drivers polled from outside gives the job's
`sampled_lag_p99_s` beside it, from the records' `_updated_ms` (late by up to a poll when a driver's record is
written twice between polls). Batch times, distinct drivers per batch and the per-phase breakdown come from the
job's log lines of the micro-batches after the warm-up; the record size from the store (SQLite's `dbstat`,
Aerospike's set statistics) and the sampled drivers' `_stream`, the checkpoint's size from its folder. The
machine-speed calibration is printed at start and end. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Run as `python bench/stream.py`, this folder comes first on sys.path and bench/batch.py would shadow the `batch`
# package; resolve imports from the repository root instead.
REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)

from bench.calibration import Calibration  # noqa: E402 - after the path fix
from bench.fleet import FleetEvents, driver_id, preload  # noqa: E402
from featurestore.base import now_ms  # noqa: E402
from runtime.config import Settings, load_settings  # noqa: E402
from runtime.kafka_clients import aiokafka_producer_options  # noqa: E402
from runtime.processes import ServiceProcess  # noqa: E402
from runtime.topics import count_topic  # noqa: E402
from schemas.features import STREAM_STATE_BIN  # noqa: E402

THROUGHPUT_RATIO_TARGET = 0.8
LAG_TARGET_S = 1.0
LAG_RATIO_TARGET = 1.3
LAG_TARGET_RATE = 5_000
WARMUP_EVENTS = 20_000
BREAKDOWN = re.compile(r"batch (\d+) breakdown \(ms\) (\{.*\})")
BATCH_ROWS = re.compile(r"batch (\d+): in (\d+) ")
BATCH_DRIVERS = re.compile(r"batch (\d+): in (\d+) .*; drivers (\d+),")
BATCH_LAGS = re.compile(r"batch (\d+) lags \(ms\) (\{.*\})")


async def produce(settings: Settings, topic: str, messages: list[dict], rate: float,
                  sent_ms: dict[str, list[int]]) -> float:
    """Send `messages` at `rate`/s (0: as fast as possible), stamping `ts`; returns the first send time (epoch s).

    `sent_ms` gets each driver's send times, in order."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**aiokafka_producer_options(settings), linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    try:
        if rate:
            return await _paced(producer, topic, messages, rate, sent_ms)
        return await _backlog(producer, topic, messages, sent_ms)
    finally:
        await producer.stop()


async def _paced(producer, topic: str, messages: list[dict], rate: float, sent_ms: dict[str, list[int]]) -> float:
    """Every 10 ms, the messages due by then, `ts` = that send time, in one batch per partition."""
    from schemas.messages import encode

    first, sent, sends = time.time(), 0, []
    while sent < len(messages):
        await asyncio.sleep(max(0.0, first + sent / rate - time.time()) + 0.01)
        due = min(len(messages), int((time.time() - first) * rate) + 1)
        stamp = now_ms()
        chunk = [{**m, "ts": stamp} for m in messages[sent:due]]
        for message in chunk:
            sent_ms.setdefault(message["driver_id"], []).append(stamp)
        sends += await _send_batches(producer, topic, [(m["driver_id"].encode(), encode(m)) for m in chunk])
        sent = due
    await asyncio.gather(*sends)
    return first


async def _backlog(producer, topic: str, messages: list[dict], sent_ms: dict[str, list[int]]) -> float:
    """Everything at once, encoded up front with `ts` = now, in order (one ms apart per driver)."""
    from schemas.messages import encode

    stamp = now_ms()
    keyed = [(m["driver_id"].encode(), encode({**m, "ts": stamp + i // 10_000})) for i, m in enumerate(messages)]
    first = time.time()
    for message in messages:
        sent_ms.setdefault(message["driver_id"], []).append(int(first * 1000))
    await asyncio.gather(*await _send_batches(producer, topic, keyed))
    return first


async def _send_batches(producer, topic: str, keyed: list[tuple[bytes, bytes]]) -> list[asyncio.Future]:
    """Send (key, value) pairs in whole batches per partition (the default partitioner's placement), so the
    producer takes little of the CPU the job is measured on; returns the delivery futures."""
    from aiokafka.partitioner import DefaultPartitioner

    partitions = sorted(await producer.partitions_for(topic))
    place = DefaultPartitioner()
    batches = {p: producer.create_batch() for p in partitions}
    sends = []
    for key, value in keyed:
        partition = place(key, partitions, partitions)
        while batches[partition].append(key=key, value=value, timestamp=None) is None:  # full: ship it
            sends.append(await producer.send_batch(batches[partition], topic, partition=partition))
            batches[partition] = producer.create_batch()
    sends += [await producer.send_batch(b, topic, partition=p) for p, b in batches.items() if b.record_count()]
    return sends


class LagSampler(threading.Thread):
    """Polls sampled drivers' `_n_events`/`_updated_ms`; each newly applied event's lag is write time - send time.
    `sent_ms` holds each sampled driver's send times of the measured events, applied from its count at the start."""

    def __init__(self, store, drivers: list[str], sent_ms: dict[str, list[int]], interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.store, self.drivers, self.sent_ms, self.interval_s = store, drivers, sent_ms, interval_s
        self.base = {row.entity_id: (row.bins or {}).get("_n_events", 0) for row in store.read(drivers, ["_n_events"])}
        self.seen = dict(self.base)
        self.last_write_ms = 0
        self.lags_ms: list[int] = []
        self.done = threading.Event()

    def poll(self) -> None:
        """One read of the sampled drivers."""
        for row in self.store.read(self.drivers, ["_n_events", "_updated_ms"]):
            if row.bins is None or row.bins["_n_events"] <= self.seen[row.entity_id]:
                continue
            sent, base = self.sent_ms.get(row.entity_id, []), self.base[row.entity_id]
            new = sent[self.seen[row.entity_id] - base : row.bins["_n_events"] - base]
            self.lags_ms += [row.bins["_updated_ms"] - t for t in new]
            self.seen[row.entity_id] = row.bins["_n_events"]
            self.last_write_ms = max(self.last_write_ms, row.bins["_updated_ms"])

    def applied(self) -> int:
        """Measured events applied to the sampled drivers so far."""
        return sum(self.seen[d] - self.base[d] for d in self.drivers)

    def run(self) -> None:
        while not self.done.is_set():
            self.poll()
            time.sleep(self.interval_s)


def wait_for(progress: Callable[[], tuple[int, int]], total: int, timeout_s: float, job: ServiceProcess) -> float:
    """Block until `progress()` = (events done, when the last was done in epoch ms) reaches `total`; returns that
    time (epoch s). Polls twice a second: the bench must not take the CPU it measures."""
    deadline = time.monotonic() + timeout_s
    while (seen := progress())[0] < total:
        if not job.alive:
            raise SystemExit(f"the run logging to {job.log_path} exited:\n{job.log_tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"only {seen[0]:,} of {total:,} events done after {timeout_s:.0f} s")
        time.sleep(0.5)
    return seen[1] / 1000.0


class FloorProcess(ServiceProcess):
    """`bench/stream_floor.py` with the job's flags: the same source and parse stage into a counting sink."""

    def __init__(self, flags: list[str], settings: dict[str, object], workdir: Path) -> None:
        super().__init__(flags, settings, workdir / "floor.log")
        self.counts_path = workdir / "counts.jsonl"
        self.command = [sys.executable, "-m", "bench.stream_floor", str(self.counts_path), *flags]
        self.env["PYTHONPATH"] = str(REPO)

    def batches(self) -> list[dict]:
        """The counting sink's lines so far."""
        if not self.counts_path.exists():
            return []
        return [json.loads(line) for line in self.counts_path.read_text().splitlines() if line.endswith("}")]


def counted(batches: list[dict]) -> tuple[int, int]:
    """(events the floor counted in `batches`, when the last of them finished in epoch ms)."""
    return sum(n for b in batches for _, n in b["ts_counts"]), max((b["done_ms"] for b in batches), default=0)


def batch_figures(log_text: str, after_batch: int) -> list[dict[str, int]]:
    """The breakdown (ms) of each micro-batch with events after `after_batch`, from the job's debug log."""
    rows = {int(m[1]): int(m[2]) for m in BATCH_ROWS.finditer(log_text)}
    return [json.loads(m[2]) for m in BREAKDOWN.finditer(log_text)
            if int(m[1]) > after_batch and rows.get(int(m[1]), 0) > 0]


def logged_through(job: ServiceProcess, events: int, timeout_s: float) -> int:
    """Wait until the job's log reports micro-batches of `events` events in all (progress is logged after the
    writes); returns the last of those batches."""
    wait_for(lambda: (sum(int(m[2]) for m in BATCH_ROWS.finditer(job.log_tail(10**9))), 0), events, timeout_s, job)
    return max(int(m[1]) for m in BATCH_ROWS.finditer(job.log_tail(10**9)))


def batch_drivers(log_text: str, after_batch: int) -> list[int]:
    """Distinct drivers of each micro-batch with events after `after_batch`, from the job's log."""
    return [int(m[3]) for m in BATCH_DRIVERS.finditer(log_text) if int(m[1]) > after_batch and int(m[2]) > 0]


def logged_lags(log_text: str, after_batch: int) -> list[int]:
    """Every applied event's lag (ms, to the 10 ms bucket) of the micro-batches after `after_batch`, as the job
    measured it (event time = send time, to the write of its record), from its debug log."""
    return [int(bucket) for m in BATCH_LAGS.finditer(log_text) if int(m[1]) > after_batch
            for bucket, n in json.loads(m[2]).items() for _ in range(n)]


def folder_bytes(folder: Path) -> int:
    """The bytes of every file under `folder`."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def record_bytes(store) -> float | None:
    """Mean bytes a driver record takes in the store: SQLite's table payload (`dbstat`) per row, or Aerospike's
    set statistics (`data_used_bytes` per object)."""
    if store.backend == "sqlite":
        conn = store._conn()
        payload = conn.execute("SELECT sum(payload) FROM dbstat WHERE name = 'driver-features'").fetchone()[0]
        rows = conn.execute('SELECT count(*) FROM "driver-features"').fetchone()[0]
        return payload / rows if rows else None
    stats = {}
    for _, (error, answer) in store.client().info_all(f"sets/{store.namespace}/{store.record_set}").items():
        if error is None and answer:
            for item in answer.strip().rstrip(";").split(":"):
                key, _, value = item.partition("=")
                if value.isdigit():
                    stats[key] = stats.get(key, 0) + int(value)
    objects = stats.get("objects", 0)
    return stats.get("data_used_bytes", 0) / objects if objects else None


def summarize_batches(figures: list[dict[str, int]]) -> dict[str, object]:
    """Batch time p50/p99 (s) and the median of each phase (ms) over the measured micro-batches."""
    if not figures:
        return {"batches": 0, "batch_p50_s": None, "batch_p99_s": None, "phase_p50_ms": {}}
    totals = np.asarray([f["total"] for f in figures], dtype=np.float64) / 1000
    phases = sorted({name for f in figures for name in f if name != "total"})
    return {"batches": len(figures), "batch_p50_s": round(float(np.percentile(totals, 50)), 3),
            "batch_p99_s": round(float(np.percentile(totals, 99)), 3),
            "phase_p50_ms": {name: round(float(np.median([f.get(name, 0) for f in figures]))) for name in phases}}


def job_store_settings(workdir: Path, run_id: str) -> dict[str, object]:
    """The job's store: a fresh SQLite file, or Aerospike sets of this run when `AEROSPIKE_HOSTS` is set."""
    if hosts := os.environ.get("AEROSPIKE_HOSTS"):
        return {"store": "aerospike", "aerospike_hosts": hosts, "aerospike_set_prefix": f"bench-{run_id}-",
                "aerospike_timeout_ms": 2_000}
    return {"store": "sqlite", "sqlite_path": (workdir / "features.db").resolve()}


class Run:
    """One measured run: a fresh topic (and DLQ) and store, warm-up, then the events at the rate."""

    def __init__(self, args: argparse.Namespace, name: str, messages: list[dict]) -> None:
        from runtime.topics import create_topics

        self.args, self.messages = args, messages
        self.workdir = args.workdir / name
        self.workdir.mkdir(parents=True)
        run_id = uuid.uuid4().hex[:8]
        store = job_store_settings(self.workdir, run_id)
        self.settings = load_settings(topic_trip_events=f"bench-stream-{run_id}",
                                      topic_trip_events_dlq=f"bench-dlq-{run_id}", **store)
        create_topics(self.settings,
                      [self.settings.topic_trip_events, self.settings.topic_trip_events_dlq],
                      self.settings.kafka_partitions)
        self.job_settings = {"kafka_bootstrap": self.settings.kafka_bootstrap, "home": self.workdir.resolve(),
                             "topic_trip_events": self.settings.topic_trip_events,
                             "topic_trip_events_dlq": self.settings.topic_trip_events_dlq, **store}
        self.checkpoint = self.workdir / "checkpoint"
        self.flags = ["--checkpoint", str(self.checkpoint), "--metrics-port", "0",
                      "--starting-offsets", "earliest", "--trigger-ms", str(args.trigger_ms),
                      "--max-offsets-per-trigger", str(args.max_offsets), "--partitions", str(args.partitions),
                      *(f"--conf={setting}" for setting in args.conf)]

    def send(self, messages: list[dict], rate: float, sent_ms: dict[str, list[int]]) -> float:
        """`produce` into this run's topic."""
        return asyncio.run(produce(self.settings, self.settings.topic_trip_events, messages, rate,
                                   sent_ms))

    def warm_up(self, backlog: list[dict], paced: list[dict]) -> None:
        """The warm-up: `backlog` at once, then `paced` at the run's rate."""
        self.send(backlog, 0, {})
        if paced:
            self.send(paced, self.args.rate, {})

    def result(self, first: float, done: float, lags_ms: list[int], log_text: str, after: int) -> dict[str, object]:
        """The run's figures: `first` send and last `done` (epoch s), lags, and the batches logged after `after`."""
        p50, p99 = (float(x) / 1000 for x in np.percentile(lags_ms, [50, 99]))
        return {"throughput_eps": len(self.messages) / (done - first), "lag_p50_s": p50, "lag_p99_s": p99,
                "lag_samples": len(lags_ms), **summarize_batches(batch_figures(log_text, after))}


def run_floor(args: argparse.Namespace, messages: list[dict], warmup: list[dict],
              paced: list[dict]) -> dict[str, object]:
    """The floor: same source, trigger, partitions and decode, a sink that only counts."""
    run = Run(args, "floor", messages)
    job = FloorProcess(run.flags, run.job_settings, run.workdir).start()
    try:
        run.warm_up(warmup, paced)
        wait_for(lambda: counted(job.batches()), len(warmup) + len(paced), args.timeout, job)
        warm_batches = len(job.batches())
        after = logged_through(job, len(warmup) + len(paced), args.timeout)
        print("floor warmed up; producing", flush=True)
        first = run.send(messages, args.rate, {})
        done = wait_for(lambda: counted(job.batches()[warm_batches:]), len(messages), args.timeout, job)
    finally:
        job.stop(timeout=120)
    lags = [b["done_ms"] - (ts if args.rate else first * 1000)  # a backlog is sent at once
            for b in job.batches()[warm_batches:] for ts, n in b["ts_counts"] for _ in range(n)]
    return run.result(first, done, lags, job.log_tail(10**9), after)


def sampled_drivers(messages: list[dict], sample: int) -> list[str]:
    """The drivers whose records the lag sampler polls: all of them up to `sample`, else those of `sample` events
    drawn at random (a large fleet's drivers have few events each)."""
    drivers = sorted({m["driver_id"] for m in messages})
    if len(drivers) <= sample:
        return drivers
    return sorted({m["driver_id"] for m in random.Random(1).sample(messages, sample)})


def run_stream(args: argparse.Namespace, messages: list[dict], warmup: list[dict],
               paced: list[dict]) -> dict[str, object]:
    """The job: `tripscore -v stream` over the fleet's backfilled records."""
    from featurestore import open_store

    run = Run(args, "stream", messages)
    store = open_store(run.settings)
    print(f"fleet records written in {preload(store, args.fleet):.0f} s", flush=True)
    job = ServiceProcess(["-v", "stream", *run.flags], run.job_settings, run.workdir / "stream.log").start()
    try:
        run.warm_up(warmup, paced)
        after = logged_through(job, len(warmup) + len(paced), args.timeout)
        print("job warmed up; producing", flush=True)
        sent_ms: dict[str, list[int]] = {}
        sampler = LagSampler(store, sampled_drivers(messages, args.sample), sent_ms)
        sampled = sum(1 for m in messages if m["driver_id"] in sampler.base)
        sampler.start()
        first = run.send(messages, args.rate, sent_ms)
        logged_through(job, len(warmup) + len(paced) + len(messages), args.timeout)  # logged after the writes
        sampler.done.set()
        sampler.join()
        sampler.poll()
        if sampler.applied() != sampled:
            raise SystemExit(f"{sampled - sampler.applied():,} events of the sampled drivers were not applied: see "
                             f"{job.log_path}")
        done = sampler.last_write_ms / 1000
    finally:
        job.stop(timeout=120)  # SIGTERM: the job stops between batches
    log_text = job.log_tail(10**9)
    result = run.result(first, done, logged_lags(log_text, after), log_text, after)
    per_batch = batch_drivers(log_text, after)
    states = [len(now.bins[STREAM_STATE_BIN]) for now in store.read_current(sorted(sampler.base))
              if now.bins and STREAM_STATE_BIN in now.bins]
    result.update(dlq=count_topic(run.settings, run.settings.topic_trip_events_dlq),
                  sampled_lag_p99_s=float(np.percentile(sampler.lags_ms, 99)) / 1000,
                  drivers_per_batch_p50=int(np.median(per_batch)) if per_batch else None,
                  record_bytes=record_bytes(store), stream_state_bytes=float(np.mean(states)) if states else None,
                  checkpoint_bytes=folder_bytes(run.checkpoint), store=store.backend)
    if store.backend == "aerospike":
        store.truncate()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=int, default=1_000, help="drivers with records in the store (default 1000)")
    parser.add_argument("--events", type=int, default=150_000, help="events to produce (default 150000)")
    parser.add_argument("--rate", type=float, default=5_000.0, help="events/s to produce, 0 = a backlog at once")
    parser.add_argument("--trigger-ms", type=int, default=load_settings().stream_trigger_ms,
                        help="trigger interval of both runs (default: TRIPSCORE_STREAM_TRIGGER_MS, else the job's)")
    parser.add_argument("--max-offsets", type=int, default=200_000, help="job maxOffsetsPerTrigger (default 200000)")
    parser.add_argument("--partitions", type=int, default=2, help="job tasks per micro-batch (default 2)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="a Spark setting for both runs (repeatable), as `tripscore stream --conf`")
    parser.add_argument("--warmup-s", type=float, default=10.0,
                        help="seconds of events at --rate after the warm-up backlog, before measuring (default 10)")
    parser.add_argument("--sample", type=int, default=2_000,
                        help="drivers polled for lag: all up to this many, else those of this many events "
                             "(default 2000)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the job (default 1800)")
    parser.add_argument("--workdir", type=Path, default=Path(".local/bench-stream"), help="scratch folder (wiped)")
    args = parser.parse_args(argv)

    start = Calibration.now()
    print(f"calibration at the start: {start}", flush=True)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    fleet = FleetEvents(args.fleet)
    warmup, paced = fleet.take(WARMUP_EVENTS, "warm"), fleet.take(int(args.rate * args.warmup_s), "pace")
    messages = fleet.take(args.events)
    print(f"{len(messages):,} events of {len({m['driver_id'] for m in messages}):,} drivers of a fleet of "
          f"{args.fleet:,} (the first {driver_id(0)})", flush=True)
    floor = run_floor(args, messages, warmup, paced)
    job = run_stream(args, messages, warmup, paced)
    end = Calibration.now()
    print(f"calibration at the end: {end}", flush=True)

    rate = f"{args.rate:,.0f}/s" if args.rate else "max"
    throughput_ratio = job["throughput_eps"] / floor["throughput_eps"]
    lag_ratio = job["lag_p99_s"] / floor["lag_p99_s"]
    print(f"\n{'':24}{'job':>10}{'floor':>10}  target")
    print(f"{'throughput (ev/s)':24}{job['throughput_eps']:>10,.0f}{floor['throughput_eps']:>10,.0f}  "
          f">= {THROUGHPUT_RATIO_TARGET}x the floor at rate max ({rate} here)")
    print(f"{'lag p50 (s)':24}{job['lag_p50_s']:>10.2f}{floor['lag_p50_s']:>10.2f}")
    print(f"{'lag p99 (s)':24}{job['lag_p99_s']:>10.2f}{floor['lag_p99_s']:>10.2f}  "
          f"<= {LAG_TARGET_S:g} and <= {LAG_RATIO_TARGET}x the floor at {LAG_TARGET_RATE:,}/s")
    print(f"{'batch p50 (s)':24}{job['batch_p50_s']:>10}{floor['batch_p50_s']:>10}  over {job['batches']} / "
          f"{floor['batches']} batches")
    print(f"{'batch p99 (s)':24}{job['batch_p99_s']:>10}{floor['batch_p99_s']:>10}")
    print(f"{'lag samples':24}{job['lag_samples']:>10,}{floor['lag_samples']:>10,}")
    print(f"{'sampled lag p99 (s)':24}{job['sampled_lag_p99_s']:>10.2f}{'':>10}  (the store polled from outside)")
    print(f"{'drivers per batch p50':24}{job['drivers_per_batch_p50'] or 0:>10,}")
    print(f"{'record bytes':24}{job['record_bytes'] or 0:>10,.0f}  ({job['store']}, every record's mean; 382 before "
          f"the store held the stream's state)")
    print(f"{'stream state bytes':24}{job['stream_state_bytes'] or 0:>10,.0f}  (`_stream` of the streamed drivers)")
    print(f"{'checkpoint bytes':24}{job['checkpoint_bytes']:>10,}")
    print(f"{'dlq':24}{job['dlq']:>10,}{'':>10}  0")
    print(f"phase medians (ms), job:   {job['phase_p50_ms']}")
    print(f"phase medians (ms), floor: {floor['phase_p50_ms']}")
    print(f"(logs: {args.workdir}/stream/stream.log, {args.workdir}/floor/floor.log)")
    print(json.dumps({
        "bench": "stream", "store": job["store"], "fleet": args.fleet, "events": len(messages), "rate": args.rate,
        "trigger_ms": args.trigger_ms, "warmup_s": args.warmup_s if args.rate else 0, "conf": args.conf,
        "throughput_eps": round(job["throughput_eps"], 1), "lag_p50_s": round(job["lag_p50_s"], 3),
        "lag_p99_s": round(job["lag_p99_s"], 3), "dlq": job["dlq"],
        "floor_throughput_eps": round(floor["throughput_eps"], 1), "floor_lag_p99_s": round(floor["lag_p99_s"], 3),
        "throughput_ratio": round(throughput_ratio, 3), "lag_ratio": round(lag_ratio, 3),
        "batch_p50_s": job["batch_p50_s"], "batch_p99_s": job["batch_p99_s"],
        "floor_batch_p50_s": floor["batch_p50_s"], "drivers_per_batch_p50": job["drivers_per_batch_p50"],
        "lag_samples": job["lag_samples"], "sampled_lag_p99_s": round(job["sampled_lag_p99_s"], 3),
        "record_bytes": round(job["record_bytes"] or 0), "stream_state_bytes": round(job["stream_state_bytes"] or 0),
        "checkpoint_bytes": job["checkpoint_bytes"], "phase_p50_ms": job["phase_p50_ms"],
        "floor_phase_p50_ms": floor["phase_p50_ms"],
        "calibration_start": {"load1": start.load[0], "loop_ms": round(start.loop_ms)},
        "calibration_end": {"load1": end.load[0], "loop_ms": round(end.loop_ms)},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
