"""A live run through a broker fault, for the Kafka fault tests: the stream and a scorer worker running while a
day of events (a few malformed ones among them) is replayed and score requests arrive, and a fault (a broker
killed, the broker restarted) part way."""

from __future__ import annotations

import hashlib
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
from kafka import KafkaProducer
from topic_reader import read_topic

from batch.consistency import ConsistencyReport, check_consistency
from batch.eventlog import to_messages, write_events
from batch.generate import generate_city, score_requests
from clients.scores import BlockingRiskScoreClient, collect
from featurestore import open_store
from runtime.config import Settings
from runtime.kafka_clients import kafka_python_options
from runtime.processes import ServiceProcess, free_port, http_get, settings_env
from runtime.topics import create_topics, spec_topics
from schemas.messages import encode
from scorer.harness import WorkerProcess

EVENT_RATE = 150  # events/s: the live day (~2.7 k events) takes ~18 s, long enough for a fault in the middle
REQUEST_RATE = 20
REQUESTS = 300
BAD_EVERY = 100  # one malformed event among this many: some are in flight when the fault hits


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_run(count: int) -> int:
    """The first of `count` consecutive ports that bind now (a broker node takes two), below Linux's ephemeral
    range: there a port nobody listens on can still be a client socket's, and the broker's bind fails."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20_000, 32_000 - count)
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no run of {count} free ports found")


def broker_cli(settings: Settings, *command: str) -> subprocess.CompletedProcess:
    """`tripscore <command>` against the broker and home of `settings`."""
    env = settings_env({"home": settings.home, "kafka_bootstrap": settings.kafka_bootstrap})
    return subprocess.run([sys.executable, "-m", "tripscore.cli", *command], env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def produce(settings: Settings, topic: str, messages: list[tuple[str, dict]], rate: float,
            sent_at: dict[str, float] | None = None) -> None:
    """(key, message) pairs at `rate` per second from an acks=all, idempotent producer; send times by key.
    AssertionError when a send failed (a broker away for longer than the producer's 120 s delivery timeout)."""
    producer = KafkaProducer(**kafka_python_options(settings), acks="all", enable_idempotence=True, linger_ms=0)
    started = time.perf_counter()
    sends = []
    for i, (key, message) in enumerate(messages):
        if (ahead := i / rate - (time.perf_counter() - started)) > 0.002:
            time.sleep(ahead)
        if sent_at is not None:
            sent_at[key] = time.perf_counter()
        sends.append(producer.send(topic, key=key.encode(), value=encode(message)))
    producer.flush()
    producer.close()
    failed = [send.exception for send in sends if send.failed()]
    assert not failed, f"{len(failed)} of {len(sends)} sends to {topic} failed: {failed[0]!r}"


def caught_up(settings: Settings, last_ts: dict[str, int], timeout: float) -> bool:
    """Whether every driver's record shows its last live event before `timeout` s pass."""
    store, drivers = open_store(settings), sorted(last_ts)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.read(drivers, ["_event_ms"])
        if all(row.found and row.bins["_event_ms"] == last_ts[row.entity_id] for row in rows):
            return True
        time.sleep(0.5)
    return False


@dataclass
class LiveRun:
    """What a live run through a fault gave: times are `time.perf_counter()` values."""

    events: int
    drivers: int
    started: float
    fault_at: float
    replayed_at: float
    caught_up: bool
    features_s: float
    sent_at: dict[str, float]
    answered: int
    answered_at: dict[str, float]
    duplicates: int
    consistency: ConsistencyReport
    services_alive: bool
    bad_sent: set[str]
    bad_dead_lettered: set[str]


def run_through_fault(settings: Settings, tmp_path: Path, *, prefix: str, replication_factor: int,
                      fault: Callable[[Settings], None], fault_after_s: float) -> LiveRun:
    """Replay a live day at `EVENT_RATE` while `REQUESTS` requests go at `REQUEST_RATE`, through the stream and a
    scorer worker; call `fault` (with the run's settings) `fault_after_s` s into it, then wait for the store and
    every answer."""
    run_id = uuid.uuid4().hex[:8]
    names = dict(zip(("topic_trip_events", "topic_trip_events_dlq", "topic_score_requests", "topic_risk_scores"),
                     [f"{prefix}-{run_id}.{topic}" for topic in spec_topics(settings)], strict=True))
    settings = settings.with_overrides(home=tmp_path, sqlite_path=tmp_path / "features.db",
                                      models_dir=tmp_path / "models", scorer_app_id=f"{prefix}-{run_id}",
                                      topic_score_dlq=names["topic_trip_events_dlq"], store_deadline_ms=2000, **names)
    create_topics(settings, names.values(), partitions=4, replication_factor=replication_factor)
    city = generate_city(drivers=60, days=2)
    live = city.events.filter(pc.greater_equal(city.events.column("ts_ms"), city.config.start_ms + 86_400_000))
    write_events(live, tmp_path / "live")
    last = live.group_by("driver_id").aggregate([("ts_ms", "max")])
    last_ts = dict(zip(last.column("driver_id").to_pylist(), last.column("ts_ms_max").to_pylist(), strict=True))
    events = [(message["driver_id"], message) for message in to_messages(live)]
    for i in range(BAD_EVERY // 2, len(events), BAD_EVERY):  # no `ts`: each goes to the dead-letter topic
        events.insert(i, (events[i][0], {"event_id": f"bad-{i}", "event_type": "trip_completed",
                                         "driver_id": events[i][0], "trip_id": f"bad-{i}"}))
    bad_sent = {hashlib.sha256(encode(message)).hexdigest() for _, message in events if "ts" not in message}
    requests = [(request["request_id"], request) for request in score_requests(city.driver_ids, REQUESTS + 1, seed=3)]

    service_settings = {k: v for k, v in vars(settings).items() if v is not None}
    stream_port = free_port()
    stream = ServiceProcess(["stream", "--trigger-ms", "500", "--metrics-port", str(stream_port)], service_settings,
                            tmp_path / "stream.log")
    scorer = WorkerProcess(service_settings, tmp_path / "score.log")
    client = None
    try:
        stream.start()
        scorer.start()
        stream.wait_until(lambda: http_get(f"http://127.0.0.1:{stream_port}/metrics") is not None, "metrics", 180)
        scorer.wait_ready(120)
        client = BlockingRiskScoreClient(settings)
        warm = client.expect(requests[0][0], timeout=120)
        produce(settings, settings.topic_trip_events, events[:1], EVENT_RATE)  # both services warm before the fault
        produce(settings, settings.topic_score_requests, requests[:1], REQUEST_RATE)
        assert warm.result(), "the scorer answers"
        pending = {rid: client.expect(rid, timeout=300) for rid, _ in requests[1:]}
        assert caught_up(settings, {events[0][0]: events[0][1]["ts"]}, timeout=180), "the streaming job writes"
        sent_at: dict[str, float] = {}
        sender = threading.Thread(target=produce, daemon=True, args=(
            settings, settings.topic_score_requests, requests[1:], REQUEST_RATE, sent_at))
        faulter = threading.Timer(fault_after_s, fault, (settings,))
        started = time.perf_counter()
        sender.start()
        faulter.start()
        produce(settings, settings.topic_trip_events, events[1:], EVENT_RATE)
        replayed_at = time.perf_counter()
        sender.join()
        faulter.join()
        done = caught_up(settings, last_ts, timeout=180)
        features_s = time.perf_counter() - replayed_at
        answers = collect(pending, timeout=120)
        answered_at = {rid: at for rid in answers if (at := client.received_at(rid)) is not None}
        duplicates = client.duplicates
        consistency = check_consistency(open_store(settings), [tmp_path / "live"], sorted(last_ts))
        letters = read_topic(settings, settings.topic_trip_events_dlq, len(bad_sent), timeout_s=60)
        services_alive = stream.alive and scorer.alive
    finally:
        if client is not None:
            client.close()
        for service in (scorer, stream):
            service.stop(timeout=30)
    bad_dead_lettered = {letter["original_sha256"] for _, letter in letters}
    return LiveRun(events=len(events) - len(bad_sent), drivers=len(last_ts), started=started,
                   fault_at=started + fault_after_s, replayed_at=replayed_at, caught_up=done, features_s=features_s,
                   sent_at=sent_at, answered=len(answers), answered_at=answered_at, duplicates=duplicates,
                   consistency=consistency, services_alive=services_alive, bad_sent=bad_sent,
                   bad_dead_lettered=bad_dead_lettered)
