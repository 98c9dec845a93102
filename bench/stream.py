"""Streaming benchmark (SPEC §7): throughput and event-to-visible lag of `tripscore stream`, next to Spark's floor.

    python bench/stream.py --events 600000 --rate 0       # sustained throughput, target >= 30,000 events/s
    python bench/stream.py --events 150000 --rate 5000    # lag p99 at 5,000 events/s, target <= 1.5 s

Two runs, each a subprocess on a fresh topic: the floor (`bench/stream_floor.py`: the same Kafka source, trigger,
partitions and parse stage into a sink that only counts) and the job (`tripscore -v stream`, fresh SQLite store).
A warm-up brings each to steady state: 20,000 events at once, then, with a rate, `--warmup-s` seconds of events at
that rate (the JVM compiles Spark's code paths for live-sized batches during the first seconds). Then N generated
events are produced at `--rate`: with a rate, the events due every 10 ms with `ts` = their send time; at 0, a
backlog sent at once that keeps the events' time spread, shifted to end now. Throughput is N over the time from the
first send to the last write; the job's lag is send time to the store's `_updated_ms` (polling a sample of drivers),
the floor's send time to the end of its sink. Batch times and the per-phase breakdown come from the debug log lines
of the micro-batches after the warm-up. The machine-speed calibration is printed at start and end. Last line: one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from runtime.config import Settings, load_settings  # noqa: E402
from runtime.kafka_clients import aiokafka_producer_options  # noqa: E402
from runtime.processes import ServiceProcess  # noqa: E402
from runtime.topics import count_topic  # noqa: E402
from streaming.checkpoint import DEFAULT_BUCKETS  # noqa: E402

THROUGHPUT_TARGET_EPS = 30_000
THROUGHPUT_RATIO_TARGET = 0.7
LAG_TARGET_S = 1.5
LAG_RATIO_TARGET = 1.5
LAG_TARGET_RATE = 5_000
WARMUP_EVENTS = 20_000
BREAKDOWN = re.compile(r"batch (\d+) breakdown \(ms\) (\{.*\})")
BATCH_ROWS = re.compile(r"batch (\d+): in (\d+) ")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def city_messages(events: int, days: int, drivers: int | None) -> list[dict]:
    """The first `events` TripEvents of a generated city, in time order."""
    from batch.generate import drivers_for_events, generate_city

    city = generate_city(seed=17, drivers=drivers or drivers_for_events(events * 11 // 10, days), days=days)
    messages = list(city.messages())
    if len(messages) < events:
        raise SystemExit(f"the city has {len(messages):,} events < {events:,}: pass more --days or --drivers")
    return messages[:events]


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
    """Everything at once, encoded up front; the events keep their time spread, shifted to end at the send time."""
    from schemas.messages import encode

    shift = now_ms() - messages[-1]["ts"]
    keyed = [(m["driver_id"].encode(), encode({**m, "ts": m["ts"] + shift})) for m in messages]
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
    """Polls sampled drivers' `_n_events`/`_updated_ms`; each newly applied event's lag is write time - send time."""

    def __init__(self, store, drivers: list[str], sent_ms: dict[str, list[int]], interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.store, self.drivers, self.sent_ms, self.interval_s = store, drivers, sent_ms, interval_s
        self.seen = dict.fromkeys(drivers, 0)
        self.lags_ms: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for row in self.store.read(self.drivers, ["_n_events", "_updated_ms"]):
                if row.bins is None or row.bins["_n_events"] <= self.seen[row.entity_id]:
                    continue
                sent = self.sent_ms.get(row.entity_id, [])
                new = sent[self.seen[row.entity_id] : row.bins["_n_events"]]
                self.lags_ms += [row.bins["_updated_ms"] - t for t in new]
                self.seen[row.entity_id] = row.bins["_n_events"]
            time.sleep(self.interval_s)


def visible(store, drivers: list[str]) -> tuple[int, int]:
    """(events applied to these drivers' stored records, the latest `_updated_ms` among them)."""
    rows = [row.bins for row in store.read(drivers, ["_n_events", "_updated_ms"]) if row.bins]
    return sum(b["_n_events"] for b in rows), max((b["_updated_ms"] for b in rows), default=0)


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


def summarize_batches(figures: list[dict[str, int]]) -> dict[str, object]:
    """Batch time p50/p99 (s) and the median of each phase (ms) over the measured micro-batches."""
    if not figures:
        return {"batches": 0, "batch_p50_s": None, "batch_p99_s": None, "phase_p50_ms": {}}
    totals = np.asarray([f["total"] for f in figures], dtype=np.float64) / 1000
    phases = sorted({name for f in figures for name in f if name != "total"})
    return {"batches": len(figures), "batch_p50_s": round(float(np.percentile(totals, 50)), 3),
            "batch_p99_s": round(float(np.percentile(totals, 99)), 3),
            "phase_p50_ms": {name: round(float(np.median([f.get(name, 0) for f in figures]))) for name in phases}}


class Run:
    """One measured run: a fresh topic (and DLQ), warm-up, then the events at the rate."""

    def __init__(self, args: argparse.Namespace, name: str, messages: list[dict]) -> None:
        from runtime.topics import create_topics

        self.args, self.messages = args, messages
        self.workdir = args.workdir / name
        self.workdir.mkdir(parents=True)
        run_id = uuid.uuid4().hex[:8]
        self.settings = load_settings(sqlite_path=(self.workdir / "features.db").resolve(),
                                      topic_trip_events=f"bench-stream-{run_id}",
                                      topic_trip_events_dlq=f"bench-dlq-{run_id}")
        create_topics(self.settings,
                      [self.settings.topic_trip_events, self.settings.topic_trip_events_dlq],
                      self.settings.kafka_partitions)
        self.job_settings = {"kafka_bootstrap": self.settings.kafka_bootstrap, "sqlite_path": self.settings.sqlite_file,
                             "home": self.workdir.resolve(), "topic_trip_events": self.settings.topic_trip_events,
                             "topic_trip_events_dlq": self.settings.topic_trip_events_dlq}
        self.flags = ["--checkpoint", str(self.workdir / "checkpoint"), "--metrics-port", "0",
                      "--starting-offsets", "earliest", "--trigger-ms", str(args.trigger_ms),
                      "--max-offsets-per-trigger", str(args.max_offsets), "--partitions", str(args.partitions),
                      "--state-buckets", str(args.state_buckets), *(f"--conf={setting}" for setting in args.conf)]

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
    """The floor: same source, trigger, partitions and parse stage, a sink that only counts."""
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


def run_stream(args: argparse.Namespace, messages: list[dict], warmup: list[dict],
               paced: list[dict]) -> dict[str, object]:
    """The job: `tripscore -v stream` into a fresh SQLite store."""
    from featurestore import open_store

    run = Run(args, "stream", messages)
    drivers = sorted({m["driver_id"] for m in messages})
    job = ServiceProcess(["-v", "stream", *run.flags], run.job_settings, run.workdir / "stream.log").start()
    store = open_store(run.settings)
    try:
        run.warm_up(warmup, paced)
        warm_drivers = sorted({m["driver_id"] for m in warmup + paced})
        wait_for(lambda: visible(store, warm_drivers), len(warmup) + len(paced), args.timeout, job)
        after = logged_through(job, len(warmup) + len(paced), args.timeout)
        print("job warmed up; producing", flush=True)
        sent_ms: dict[str, list[int]] = {}
        sampler = LagSampler(store, random.Random(1).sample(drivers, min(args.sample, len(drivers))), sent_ms)
        sampler.start()
        first = run.send(messages, args.rate, sent_ms)
        done = wait_for(lambda: visible(store, drivers), len(messages), args.timeout, job)
        time.sleep(3 * sampler.interval_s)
        sampler.done.set()
        sampler.join()
    finally:
        job.stop(timeout=120)  # SIGTERM: the job stops between batches
    result = run.result(first, done, sampler.lags_ms, job.log_tail(10**9), after)
    result["dlq"] = count_topic(run.settings, run.settings.topic_trip_events_dlq)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="events to produce (default 300000)")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s to produce, 0 = as fast as possible")
    parser.add_argument("--days", type=int, default=7, help="simulated days of the generated city (default 7)")
    parser.add_argument("--drivers", type=int, help="drivers of the city (default: sized by --events and --days)")
    parser.add_argument("--trigger-ms", type=int, default=1000, help="job trigger interval (default 1000)")
    parser.add_argument("--max-offsets", type=int, default=200_000, help="job maxOffsetsPerTrigger (default 200000)")
    parser.add_argument("--partitions", type=int, default=2, help="job tasks per stage (default 2)")
    parser.add_argument("--state-buckets", type=int, default=load_settings().stream_state_buckets or DEFAULT_BUCKETS,
                        help="the job's state buckets (default: TRIPSCORE_STREAM_STATE_BUCKETS, else the job's)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="a Spark setting for both runs (repeatable), as `tripscore stream --conf`")
    parser.add_argument("--warmup-s", type=float, default=10.0,
                        help="seconds of events at --rate after the warm-up backlog, before measuring (default 10)")
    parser.add_argument("--sample", type=int, default=200, help="drivers polled for lag (default 200)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the job (default 1800)")
    parser.add_argument("--workdir", type=Path, default=Path(".local/bench-stream"), help="scratch folder (wiped)")
    args = parser.parse_args(argv)

    start = Calibration.now()
    print(f"calibration at the start: {start}", flush=True)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    messages = city_messages(args.events, args.days, args.drivers)
    drivers = sorted({m["driver_id"] for m in messages})
    warmup = [{**m, "driver_id": f"warm-{m['driver_id']}"} for m in messages[:WARMUP_EVENTS]]
    paced = [{**m, "driver_id": f"pace-{m['driver_id']}"} for m in messages[: int(args.rate * args.warmup_s)]]
    print(f"{len(messages):,} events of {len(drivers):,} drivers", flush=True)
    floor = run_floor(args, messages, warmup, paced)
    job = run_stream(args, messages, warmup, paced)
    end = Calibration.now()
    print(f"calibration at the end: {end}", flush=True)

    rate = f"{args.rate:,.0f}/s" if args.rate else "max"
    throughput_ratio = job["throughput_eps"] / floor["throughput_eps"]
    lag_ratio = job["lag_p99_s"] / floor["lag_p99_s"]
    print(f"\n{'':22}{'job':>10}{'floor':>10}  target")
    print(f"{'throughput (ev/s)':22}{job['throughput_eps']:>10,.0f}{floor['throughput_eps']:>10,.0f}  "
          f">= {THROUGHPUT_TARGET_EPS:,} and >= {THROUGHPUT_RATIO_TARGET}x the floor at rate max ({rate} here)")
    print(f"{'lag p50 (s)':22}{job['lag_p50_s']:>10.2f}{floor['lag_p50_s']:>10.2f}")
    print(f"{'lag p99 (s)':22}{job['lag_p99_s']:>10.2f}{floor['lag_p99_s']:>10.2f}  "
          f"<= {LAG_TARGET_S:g} and <= {LAG_RATIO_TARGET}x the floor at {LAG_TARGET_RATE:,}/s")
    print(f"{'batch p50 (s)':22}{job['batch_p50_s']:>10}{floor['batch_p50_s']:>10}  over {job['batches']} / "
          f"{floor['batches']} batches")
    print(f"{'batch p99 (s)':22}{job['batch_p99_s']:>10}{floor['batch_p99_s']:>10}")
    print(f"{'lag samples':22}{job['lag_samples']:>10,}{floor['lag_samples']:>10,}")
    print(f"{'dlq':22}{job['dlq']:>10,}{'':>10}  0")
    print(f"phase medians (ms), job:   {job['phase_p50_ms']}")
    print(f"phase medians (ms), floor: {floor['phase_p50_ms']}")
    print(f"(logs: {args.workdir}/stream/stream.log, {args.workdir}/floor/floor.log)")
    print(json.dumps({
        "bench": "stream", "events": len(messages), "rate": args.rate, "warmup_s": args.warmup_s if args.rate else 0,
        "state_buckets": args.state_buckets, "conf": args.conf,
        "throughput_eps": round(job["throughput_eps"], 1), "lag_p50_s": round(job["lag_p50_s"], 3),
        "lag_p99_s": round(job["lag_p99_s"], 3), "dlq": job["dlq"],
        "floor_throughput_eps": round(floor["throughput_eps"], 1), "floor_lag_p99_s": round(floor["lag_p99_s"], 3),
        "throughput_ratio": round(throughput_ratio, 3), "lag_ratio": round(lag_ratio, 3),
        "batch_p50_s": job["batch_p50_s"], "batch_p99_s": job["batch_p99_s"],
        "floor_batch_p50_s": floor["batch_p50_s"], "phase_p50_ms": job["phase_p50_ms"],
        "floor_phase_p50_ms": floor["phase_p50_ms"],
        "calibration_start": {"load1": start.load[0], "loop_ms": round(start.loop_ms)},
        "calibration_end": {"load1": end.load[0], "loop_ms": round(end.loop_ms)},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
