"""A local 3-broker KRaft cluster from `tripscore kafka up --brokers 3`, and the pipeline losing one broker (kill -9)
mid-replay: no event lost or double counted, every score request answered."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from batch.consistency import check_consistency
from batch.eventlog import to_messages, write_events
from batch.generate import generate_city, score_requests
from clients.scores import BlockingRiskScoreClient, collect
from featurestore import open_store
from runtime import kafka_local
from runtime.config import Settings, load_settings
from runtime.kafka_clients import kafka_python_options
from runtime.processes import ServiceProcess, free_port, http_get, settings_env
from runtime.topics import admin_client, create_topics, spec_topics
from schemas.messages import encode
from scorer.harness import WorkerProcess

pytestmark = [pytest.mark.cluster, pytest.mark.kafka]

BROKERS = 3
EVENT_RATE = 150  # events/s: the live day (~2.7 k events) takes ~18 s, long enough to lose a broker in the middle
REQUEST_RATE = 20
REQUESTS = 300
KILL_AFTER_S = 5.0


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port_run(count: int) -> int:
    """The first of `count` consecutive ports that bind now (the cluster's nodes take two each), below Linux's
    ephemeral range: there a port nobody listens on can still be a client socket's, and the broker's bind fails."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20_000, 32_000 - count)
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no run of {count} free ports found")


def _cli(settings: Settings, *command: str) -> subprocess.CompletedProcess:
    env = settings_env({"home": settings.home, "kafka_bootstrap": settings.kafka_bootstrap})
    return subprocess.run([sys.executable, "-m", "tripscore.cli", *command], env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings naming every node of a fresh 3-broker cluster started by the CLI; `kafka down` stops it."""
    home = tmp_path_factory.mktemp("kafka-cluster")
    first = load_settings(home=home, kafka_bootstrap=f"127.0.0.1:{_free_port_run(2 * BROKERS)}")
    try:
        up = _cli(first, "kafka", "up", "--brokers", str(BROKERS))
        assert up.returncode == 0, up.stdout + up.stderr
        yield first.with_overrides(kafka_bootstrap=kafka_local.cluster_bootstrap(first, BROKERS))
    finally:
        _cli(first, "kafka", "down")
        assert not any(kafka_local.cluster_nodes(first).values()), "every node stopped"


def test_cli_starts_three_brokers_and_replicated_topics(cluster: Settings) -> None:
    status = _cli(cluster, "kafka", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("running (pid") == BROKERS
    create = _cli(cluster, "topics", "create", "--replication-factor", "3")
    assert create.returncode == 0, create.stdout + create.stderr
    with admin_client(cluster) as admin:
        assert len(admin.describe_cluster()["brokers"]) == BROKERS
        deadline = time.monotonic() + 30
        # a new topic's partitions reach every broker's metadata a moment after `topics create` returns
        while True:
            topics = admin.describe_topics(spec_topics(cluster))
            if all(t["partitions"] for t in topics):
                break
            assert time.monotonic() < deadline, topics
            time.sleep(0.5)
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t["name"], ["min.insync.replicas"])
                                          for t in topics])
    assert {len(p["replica_nodes"]) for t in topics for p in t["partitions"]} == {3}
    assert {c["min.insync.replicas"]["value"] for c in configs["topic"].values()} == {"2"}


def _victim(cluster: Settings, topics: list[str]) -> tuple[int, int]:
    """(node, pid) of the broker leading most partitions of `topics`, never the first node of the bootstrap."""
    with admin_client(cluster) as admin:
        leaders = Counter(p["leader_id"] for t in admin.describe_topics(topics) for p in t["partitions"])
    node = max((n for n in range(2, BROKERS + 1)), key=lambda n: leaders[n])
    pid = kafka_local.cluster_nodes(cluster)[node]
    assert pid is not None
    return node, pid


def _produce(settings: Settings, topic: str, messages: list[tuple[str, dict]], rate: float,
             sent_at: dict[str, float] | None = None) -> None:
    """(key, message) pairs at `rate` per second from an acks=all, idempotent producer; send times by key."""
    producer = KafkaProducer(**kafka_python_options(settings), acks="all", enable_idempotence=True, linger_ms=0)
    started = time.perf_counter()
    for i, (key, message) in enumerate(messages):
        if (ahead := i / rate - (time.perf_counter() - started)) > 0.002:
            time.sleep(ahead)
        if sent_at is not None:
            sent_at[key] = time.perf_counter()
        producer.send(topic, key=key.encode(), value=encode(message))
    producer.flush()
    producer.close()


def _caught_up(settings: Settings, last_ts: dict[str, int], timeout: float) -> bool:
    """Whether every driver's record shows its last live event before `timeout` s pass."""
    store, drivers = open_store(settings), sorted(last_ts)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.read(drivers, ["_event_ms"])
        if all(row.found and row.bins["_event_ms"] == last_ts[row.entity_id] for row in rows):
            return True
        time.sleep(0.5)
    return False


def test_losing_a_broker_mid_replay_loses_nothing(cluster: Settings, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:8]
    names = dict(zip(("topic_trip_events", "topic_trip_events_dlq", "topic_score_requests", "topic_risk_scores"),
                     [f"loss-{run_id}.{topic}" for topic in spec_topics(cluster)], strict=True))
    settings = cluster.with_overrides(home=tmp_path, sqlite_path=tmp_path / "features.db",
                                      models_dir=tmp_path / "models", scorer_app_id=f"loss-{run_id}",
                                      topic_score_dlq=names["topic_trip_events_dlq"], store_deadline_ms=2000, **names)
    create_topics(settings, names.values(), partitions=4, replication_factor=3)
    city = generate_city(drivers=60, days=2)
    live = city.events.filter(pc.greater_equal(city.events.column("ts_ms"), city.config.start_ms + 86_400_000))
    write_events(live, tmp_path / "live")
    last = live.group_by("driver_id").aggregate([("ts_ms", "max")])
    last_ts = dict(zip(last.column("driver_id").to_pylist(), last.column("ts_ms_max").to_pylist(), strict=True))
    events = [(message["driver_id"], message) for message in to_messages(live)]
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
        _produce(settings, settings.topic_trip_events, events[:1], EVENT_RATE)  # both services warm before the loss
        _produce(settings, settings.topic_score_requests, requests[:1], REQUEST_RATE)
        assert warm.result(), "the scorer answers"
        with admin_client(settings) as admin:  # Faust's own topic is replicated like ours (the brokers' default)
            leader_topic = admin.describe_topics([f"{settings.scorer_app_id}-__assignor-__leader"])[0]
        assert {len(p["replica_nodes"]) for p in leader_topic["partitions"]} == {BROKERS}, leader_topic
        pending = {rid: client.expect(rid, timeout=300) for rid, _ in requests[1:]}
        assert _caught_up(settings, {events[0][0]: events[0][1]["ts"]}, timeout=180), "the streaming job writes"
        node, pid = _victim(cluster, list(names.values()))
        sent_at: dict[str, float] = {}
        sender = threading.Thread(target=_produce, daemon=True, args=(
            settings, settings.topic_score_requests, requests[1:], REQUEST_RATE, sent_at))
        killer = threading.Timer(KILL_AFTER_S, os.kill, (pid, signal.SIGKILL))
        started = time.perf_counter()
        sender.start()
        killer.start()
        _produce(settings, settings.topic_trip_events, events[1:], EVENT_RATE)
        replayed_at = time.perf_counter()
        sender.join()
        caught_up = _caught_up(settings, last_ts, timeout=180)
        features_s = time.perf_counter() - replayed_at
        answers = collect(pending, timeout=120)
        arrived = {rid: at for rid in answers if (at := client.received_at(rid)) is not None}
        duplicates = client.duplicates
        report = check_consistency(open_store(settings), [tmp_path / "live"], sorted(last_ts))
    finally:
        if client is not None:
            client.close()
        for service in (scorer, stream):
            service.stop(timeout=30)

    killed_at = started + KILL_AFTER_S
    latency = {k: arrived[k] - sent_at[k] for k in sent_at if k in arrived}
    before = [v for k, v in latency.items() if arrived[k] < killed_at] or [0.0]  # answered before the kill
    slow = max(1.0, 2 * max(before))
    gaps = np.diff(sorted(arrived[k] for k in latency))
    slow_until = max((arrived[k] for k, v in latency.items() if v > slow), default=killed_at)
    print(f"\nbroker loss: node {node} (pid {pid}) killed -9 {KILL_AFTER_S:.0f} s into a {replayed_at - started:.1f} s "
          f"replay of {len(events):,} events at {EVENT_RATE}/s, while {len(sent_at)} requests went at "
          f"{REQUEST_RATE}/s\n"
          f"  answered {len(answers)}/{len(sent_at)}, duplicates {duplicates}; "
          f"latency of answers before the kill p50 {np.median(before) * 1000:.0f} ms, "
          f"max {max(before):.2f} s; worst overall {max(latency.values()):.2f} s\n"
          f"  longest pause between answers {gaps.max():.1f} s; last answer slower than {slow:.1f} s came "
          f"{slow_until - killed_at:.1f} s after the kill; store caught up {features_s:.1f} s after the replay ended\n"
          f"  consistency: {report.drivers} drivers, {report.missing_in_store} missing, worst mismatch rate "
          f"{report.worst_rate():.4f}")
    assert caught_up, "every driver's record shows its last live event"
    assert len(answers) == len(sent_at) == REQUESTS, "every request answered"
    assert report.missing_in_store == 0 and report.drivers == len(last_ts)
    assert report.worst_rate() == 0.0, f"no event lost or double counted: {report.examples}"
