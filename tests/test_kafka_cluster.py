"""A local 3-broker KRaft cluster from `tripscore kafka up --brokers 3`, and the pipeline losing one broker (kill -9)
mid-replay: no event lost or double counted, every score request answered, every malformed event dead-lettered."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from kafka.admin import ConfigResource, ConfigResourceType
from live_run import EVENT_RATE, REQUEST_RATE, REQUESTS, broker_cli, free_port_run, run_through_fault

from runtime import kafka_local
from runtime.config import Settings, load_settings
from runtime.topics import admin_client, spec_topics

pytestmark = [pytest.mark.cluster, pytest.mark.kafka]

BROKERS = 3
KILL_AFTER_S = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings naming every node of a fresh 3-broker cluster started by the CLI; `kafka down` stops it."""
    home = tmp_path_factory.mktemp("kafka-cluster")
    first = load_settings(home=home, kafka_bootstrap=f"127.0.0.1:{free_port_run(2 * BROKERS)}")
    try:
        up = broker_cli(first, "kafka", "up", "--brokers", str(BROKERS))
        assert up.returncode == 0, up.stdout + up.stderr
        yield first.with_overrides(kafka_bootstrap=kafka_local.cluster_bootstrap(first, BROKERS))
    finally:
        broker_cli(first, "kafka", "down")
        assert not any(kafka_local.cluster_nodes(first).values()), "every node stopped"


def test_cli_starts_three_brokers_and_replicated_topics(cluster: Settings) -> None:
    status = broker_cli(cluster, "kafka", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("running (pid") == BROKERS
    create = broker_cli(cluster, "topics", "create", "--replication-factor", "3")
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


def test_losing_a_broker_mid_replay_loses_nothing(cluster: Settings, tmp_path: Path) -> None:
    killed: list[tuple[int, int]] = []
    leader_replicas: list[set[int]] = []

    def kill_a_leader(run: Settings) -> None:
        with admin_client(run) as admin:  # Faust's own topic is replicated like ours (the brokers' default)
            leader_topic = admin.describe_topics([f"{run.scorer_app_id}-__assignor-__leader"])[0]
        leader_replicas.append({len(p["replica_nodes"]) for p in leader_topic["partitions"]})
        killed.append(_victim(cluster, spec_topics(run)))
        os.kill(killed[0][1], signal.SIGKILL)

    run = run_through_fault(cluster, tmp_path, prefix="loss", replication_factor=3, fault=kill_a_leader,
                            fault_after_s=KILL_AFTER_S)
    assert killed, "a broker was killed"
    assert leader_replicas == [{BROKERS}], "Faust's leader topic has a replica on every broker"
    node, pid = killed[0]
    latency = {k: run.answered_at[k] - run.sent_at[k] for k in run.sent_at if k in run.answered_at}
    before = [v for k, v in latency.items() if run.answered_at[k] < run.fault_at] or [0.0]  # answered before the kill
    slow = max(1.0, 2 * max(before))
    gaps = np.diff(sorted(run.answered_at[k] for k in latency))
    slow_until = max((run.answered_at[k] for k, v in latency.items() if v > slow), default=run.fault_at)
    report = run.consistency
    print(f"\nbroker loss: node {node} (pid {pid}) killed -9 {KILL_AFTER_S:.0f} s into a "
          f"{run.replayed_at - run.started:.1f} s replay of {run.events:,} events at {EVENT_RATE}/s, while "
          f"{len(run.sent_at)} requests went at {REQUEST_RATE}/s\n"
          f"  answered {run.answered}/{len(run.sent_at)}, duplicates {run.duplicates}; "
          f"latency of answers before the kill p50 {np.median(before) * 1000:.0f} ms, "
          f"max {max(before):.2f} s; worst overall {max(latency.values()):.2f} s\n"
          f"  longest pause between answers {gaps.max():.1f} s; last answer slower than {slow:.1f} s came "
          f"{slow_until - run.fault_at:.1f} s after the kill; store caught up {run.features_s:.1f} s after the replay "
          f"ended\n"
          f"  consistency: {report.drivers} drivers, {report.missing_in_store} missing, worst mismatch rate "
          f"{report.worst_rate():.4f}")
    assert run.caught_up, "every driver's record shows its last live event"
    assert run.answered == len(run.sent_at) == REQUESTS, "every request answered"
    assert run.bad_dead_lettered == run.bad_sent, "every malformed event dead-lettered, and nothing else"
    assert report.missing_in_store == 0 and report.drivers == run.drivers
    assert report.worst_rate() == 0.0, f"no event lost or double counted: {report.examples}"
