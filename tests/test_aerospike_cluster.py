"""Aerospike as a cluster: two nodes (replication factor 2), one killed (kill -9) mid-run and started again. The
stream rides it out, the scorer answers every request throughout (distance-only while it must), and afterwards the
store equals a batch recomputation.

Runs when `AEROSPIKE_HOSTS` names two nodes of one cluster and `AEROSPIKE_NODE_CMD` is a command that takes `kill`
(kill -9 one of them) or `start` (start it again, returning once it serves); skipped otherwise."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from live_run import EVENT_RATE, REQUESTS, run_through_fault

from featurestore import open_store
from runtime.config import Settings

pytestmark = [pytest.mark.aerospike, pytest.mark.cluster, pytest.mark.kafka]
KILL_AFTER_S = 5.0
DOWN_S = 10.0  # the node stays away this long: the cluster re-forms without it, then migrates back


@pytest.fixture
def cluster(kafka_settings: Settings) -> tuple[Settings, list[str]]:
    """Settings of a two-node cluster (sets of this test's own) and the command that kills or starts a node."""
    hosts, command = os.environ.get("AEROSPIKE_HOSTS", ""), os.environ.get("AEROSPIKE_NODE_CMD", "")
    if len([h for h in hosts.split(",") if h.strip()]) < 2 or not command:
        pytest.skip("needs a two-node Aerospike cluster: AEROSPIKE_HOSTS=host1:port1,host2:port2 and "
                    "AEROSPIKE_NODE_CMD, a command taking `kill` or `start` for one of the nodes")
    settings = kafka_settings.with_overrides(store="aerospike", aerospike_hosts=hosts, aerospike_timeout_ms=200,
                                             aerospike_set_prefix=f"cluster-{uuid.uuid4().hex[:6]}-")
    yield settings, shlex.split(command)
    open_store(settings).truncate()


def test_a_node_killed_mid_run_and_back_stops_nothing_and_loses_nothing(cluster, tmp_path: Path) -> None:
    settings, command = cluster
    outage: dict[str, float] = {}
    failures: list[str] = []

    def kill_and_restart_a_node(_run: Settings) -> None:
        for action, pause in (("kill", DOWN_S), ("start", 0.0)):
            done = subprocess.run([*command, action], capture_output=True, text=True, timeout=180)
            if done.returncode:
                failures.append(f"{action}: {done.stdout}{done.stderr}")
            outage[action] = time.perf_counter()
            time.sleep(pause)

    run = run_through_fault(settings, tmp_path, prefix="aerospike-cluster", replication_factor=1,
                            fault=kill_and_restart_a_node, fault_after_s=KILL_AFTER_S)
    report = run.consistency
    retries = (tmp_path / "logs").glob("*.log")
    retried = sum(path.read_text(errors="replace").count("retrying in") for path in retries)
    print(f"\naerospike node killed -9 {KILL_AFTER_S:.0f} s into a {run.replayed_at - run.started:.1f} s replay of "
          f"{run.events:,} events at {EVENT_RATE}/s, back {outage.get('start', 0) - outage.get('kill', 0):.1f} s "
          f"later; answered {run.answered}/{len(run.sent_at)}; store caught up {run.features_s:.1f} s after the "
          f"replay; store calls retried {retried} times; consistency: {report.drivers} drivers, "
          f"{report.missing_in_store} missing, worst mismatch rate {report.worst_rate():.4f}")
    assert failures == [], failures
    assert run.services_alive, "neither the stream nor the scorer stopped"
    assert run.caught_up, "every driver's record shows its last live event"
    assert run.answered == len(run.sent_at) == REQUESTS, "every request answered"
    assert run.bad_dead_lettered == run.bad_sent, "every malformed event dead-lettered, and nothing else"
    assert report.missing_in_store == 0 and report.drivers == run.drivers
    assert report.worst_rate() == 0.0, f"no event lost or double counted: {report.examples}"
