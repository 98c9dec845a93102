"""Streaming benchmark (SPEC §7): throughput and event-to-visible lag of `tripscore stream`.

    python bench/stream.py --events 600000 --rate 0       # sustained throughput, target >= 20,000 events/s
    python bench/stream.py --events 150000 --rate 5000    # lag p99 at 5,000 events/s, target <= 5 s

The job runs in a subprocess on a fresh topic and SQLite store; a warm-up set of events brings it to steady state.
Then N generated events are produced at `--rate`: with a rate, the events due every 10 ms with `ts` = their send
time; at 0, a backlog sent at once that keeps the events' time spread, shifted to end now. Throughput is N over
the time from the first send to the last write; lag is send time to the store's `_updated_ms`, from polling a
sample of drivers. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

# bench/batch.py would shadow the `batch` package: drop this script's folder from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from runtime.config import Settings, load_settings  # noqa: E402
from runtime.kafka_clients import aiokafka_producer_options  # noqa: E402
from runtime.processes import ServiceProcess  # noqa: E402 - after the path fix
from runtime.topics import count_topic  # noqa: E402

THROUGHPUT_TARGET_EPS = 20_000
LAG_TARGET_S = 5.0
LAG_TARGET_RATE = 5_000
WARMUP_EVENTS = 20_000


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
    """Send `messages` at `rate`/s (0: as fast as possible), stamping `ts`; returns the first send time (epoch s)."""
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

    stamp = now_ms()
    shift = stamp - messages[-1]["ts"]
    keyed = [(m["driver_id"].encode(), encode({**m, "ts": m["ts"] + shift})) for m in messages]
    for message in messages:
        sent_ms.setdefault(message["driver_id"], []).append(stamp)
    first = time.time()
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


def wait_visible(store, drivers: list[str], total: int, timeout_s: float, job: ServiceProcess) -> float:
    """Block until `total` events of `drivers` are visible; returns when the last was written (epoch s).

    Polls twice a second (the bench must not take the CPU it measures); the time comes from `_updated_ms`.
    """
    deadline = time.monotonic() + timeout_s
    while (seen := visible(store, drivers))[0] < total:
        if not job.alive:
            raise SystemExit(f"the streaming job exited:\n{job.log_tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"only {seen[0]:,} of {total:,} events visible after {timeout_s:.0f} s")
        time.sleep(0.5)
    return seen[1] / 1000.0


def start_job(args: argparse.Namespace, settings: dict[str, object], workdir: Path) -> ServiceProcess:
    """`tripscore stream` in a subprocess (its own process group), logging to `<workdir>/stream.log`."""
    command = ["stream", "--checkpoint", str(workdir / "checkpoint"), "--metrics-port", "0",
               "--starting-offsets", "earliest", "--trigger-ms", str(args.trigger_ms),
               "--max-offsets-per-trigger", str(args.max_offsets), "--partitions", str(args.partitions)]
    return ServiceProcess(command, settings, workdir / "stream.log").start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="events to produce (default 300000)")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s to produce, 0 = as fast as possible")
    parser.add_argument("--days", type=int, default=7, help="simulated days of the generated city (default 7)")
    parser.add_argument("--drivers", type=int, help="drivers of the city (default: sized by --events and --days)")
    parser.add_argument("--trigger-ms", type=int, default=1000, help="job trigger interval (default 1000)")
    parser.add_argument("--max-offsets", type=int, default=200_000, help="job maxOffsetsPerTrigger (default 200000)")
    parser.add_argument("--partitions", type=int, default=2, help="job tasks per stage (default 2)")
    parser.add_argument("--sample", type=int, default=200, help="drivers polled for lag (default 200)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the job (default 1800)")
    parser.add_argument("--workdir", type=Path, default=Path(".local/bench-stream"), help="scratch folder (wiped)")
    args = parser.parse_args(argv)

    from featurestore import open_store
    from runtime.topics import create_topics

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    run_id = uuid.uuid4().hex[:8]
    settings = load_settings(sqlite_path=(args.workdir / "features.db").resolve(),
                             topic_trip_events=f"bench-stream-{run_id}", topic_trip_events_dlq=f"bench-dlq-{run_id}")
    create_topics(settings, [settings.topic_trip_events, settings.topic_trip_events_dlq],
                  settings.kafka_partitions)
    messages = city_messages(args.events, args.days, args.drivers)
    drivers = sorted({m["driver_id"] for m in messages})
    warmup = [{**m, "driver_id": f"warm-{m['driver_id']}"} for m in messages[:WARMUP_EVENTS]]
    print(f"{len(messages):,} events of {len(drivers):,} drivers; topic {settings.topic_trip_events}", flush=True)

    job_settings = {"kafka_bootstrap": settings.kafka_bootstrap, "sqlite_path": settings.sqlite_file,
                    "home": args.workdir.resolve(), "topic_trip_events": settings.topic_trip_events,
                    "topic_trip_events_dlq": settings.topic_trip_events_dlq}
    job = start_job(args, job_settings, args.workdir)
    store = open_store(settings)
    try:
        sent_ms: dict[str, list[int]] = {}
        asyncio.run(produce(settings, settings.topic_trip_events, warmup, 0, {}))
        warm_drivers = sorted({m["driver_id"] for m in warmup})
        wait_visible(store, warm_drivers, len(warmup), args.timeout, job)
        print("warmed up; producing", flush=True)
        sampler = LagSampler(store, random.Random(1).sample(drivers, min(args.sample, len(drivers))), sent_ms)
        sampler.start()
        first = asyncio.run(produce(settings, settings.topic_trip_events, messages, args.rate, sent_ms))
        produced = time.time()
        done = wait_visible(store, drivers, len(messages), args.timeout, job)
        time.sleep(3 * sampler.interval_s)
        sampler.done.set()
        sampler.join()
    finally:
        job.stop(timeout=120)  # SIGTERM: the job stops between batches
    throughput = len(messages) / (done - first)
    p50, p99 = (float(x) / 1000 for x in np.percentile(sampler.lags_ms, [50, 99]))
    dlq = count_topic(settings, settings.topic_trip_events_dlq)
    rate = f"{args.rate:,.0f}/s" if args.rate else "max"
    print(f"\n{'':22}{'value':>12}  target")
    print(f"{'produce rate (ev/s)':22}{len(messages) / (produced - first):>12,.0f}  ({rate})")
    print(f"{'throughput (ev/s)':22}{throughput:>12,.0f}  >= {THROUGHPUT_TARGET_EPS:,} at rate max")
    print(f"{'lag p50 (s)':22}{p50:>12.2f}")
    print(f"{'lag p99 (s)':22}{p99:>12.2f}  <= {LAG_TARGET_S:g} at {LAG_TARGET_RATE:,}/s")
    print(f"{'lag samples':22}{len(sampler.lags_ms):>12,}")
    print(f"{'dlq':22}{dlq:>12,}  0")
    print(f"(job log: {args.workdir / 'stream.log'}; load average {os.getloadavg()[0]:.1f})")
    print(json.dumps({"bench": "stream", "events": len(messages), "rate": args.rate,
                      "throughput_eps": round(throughput, 1), "lag_p50_s": round(p50, 3), "lag_p99_s": round(p99, 3),
                      "dlq": dlq}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
