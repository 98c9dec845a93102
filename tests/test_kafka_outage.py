"""The one broker killed (kill -9) mid-run and started again on its data after a while: the stream and the scorer
ride the outage out in place, no event is lost or double counted, every request and every bad event gets its
outcome."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from live_run import EVENT_RATE, REQUEST_RATE, REQUESTS, broker_cli, free_port_run, run_through_fault

from runtime import kafka_local
from runtime.config import Settings, load_settings

pytestmark = [pytest.mark.cluster, pytest.mark.kafka]  # its own broker JVM, so the session's broker stays up

KILL_AFTER_S = 5.0
OUTAGE_S = 20.0  # seconds with no broker at all: past the scorer group's 10 s session timeout
RECOVERY_S = 10.0
"""Every request held up by the outage is answered within this after the broker is back: 0.5 s here, against
14-20 s while kafka-python's clients backed off up to 30 s between attempts to reach a broker."""


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a fresh single broker started by the CLI on free ports; `kafka down` stops it."""
    settings = load_settings(home=tmp_path_factory.mktemp("kafka-outage"),
                             kafka_bootstrap=f"127.0.0.1:{free_port_run(2)}")
    try:
        up = broker_cli(settings, "kafka", "up")
        assert up.returncode == 0, up.stdout + up.stderr
        yield settings
    finally:
        broker_cli(settings, "kafka", "down")
        assert kafka_local.running_pid(settings) is None, "the broker stopped"


def first_accept(address: str, timeout_s: float) -> float:
    """The `time.perf_counter()` at which `address` (host:port) first accepts a TCP connection, tried every 20 ms:
    when a restarted broker is back (Kafka opens its listeners once it is ready to serve)."""
    host, port = address.rsplit(":", 1)
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return time.perf_counter()
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"no broker accepting connections at {address} after {timeout_s:.0f} s")


def test_the_broker_down_and_back_mid_run_stops_nothing_and_loses_nothing(broker: Settings, tmp_path: Path) -> None:
    outage: dict[str, float] = {}
    restarts: list[str] = []

    def kill_and_restart_the_broker(_run: Settings) -> None:
        pid = kafka_local.running_pid(broker)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        outage["down_at"] = time.perf_counter()
        time.sleep(OUTAGE_S)
        with ThreadPoolExecutor(1) as pool:  # the broker serves before `kafka up` has seen it ready and returned
            back = pool.submit(first_accept, broker.kafka_bootstrap, 180.0)
            up = broker_cli(broker, "kafka", "up")
            outage["up_at"] = back.result()
        restarts.append("" if up.returncode == 0 else up.stdout + up.stderr)

    run = run_through_fault(broker, tmp_path, prefix="outage", replication_factor=1,
                            fault=kill_and_restart_the_broker, fault_after_s=KILL_AFTER_S)
    assert restarts == [""], f"the broker started again: {restarts}"
    unreachable = (tmp_path / "score.log").read_text().count("Unable connect to node")
    latency = {k: run.answered_at[k] - run.sent_at[k] for k in run.sent_at if k in run.answered_at}
    after_up = [at - outage["up_at"] for at in run.answered_at.values() if at > outage["up_at"]]
    report = run.consistency
    print(f"\nbroker outage: killed -9 {KILL_AFTER_S:.0f} s into a {run.replayed_at - run.started:.1f} s replay of "
          f"{run.events:,} events at {EVENT_RATE}/s, started again {outage['up_at'] - outage['down_at']:.1f} s "
          f"later, while {len(run.sent_at)} requests went at {REQUEST_RATE}/s\n"
          f"  answered {run.answered}/{len(run.sent_at)}, duplicates {run.duplicates}; latency p50 "
          f"{np.median(list(latency.values())):.1f} s, worst {max(latency.values()):.1f} s; answers after the "
          f"broker was back: first {min(after_up, default=np.nan):.1f} s, last {max(after_up, default=np.nan):.1f} s\n"
          f"  store caught up {run.features_s:.1f} s after the replay ended; dead letters "
          f"{len(run.bad_dead_lettered & run.bad_sent)}/{len(run.bad_sent)}\n"
          f"  the scorer's log: {unreachable} lines \"Unable connect to node\" (aiokafka tries ~10 times a second)\n"
          f"  consistency: {report.drivers} drivers, {report.missing_in_store} missing, worst mismatch rate "
          f"{report.worst_rate():.4f}")
    assert run.services_alive, "neither the stream nor the scorer stopped"
    assert run.caught_up, "every driver's record shows its last live event"
    assert run.answered == len(run.sent_at) == REQUESTS, "every request answered"
    assert after_up, "requests held up by the outage are answered once the broker is back"
    assert max(after_up) <= RECOVERY_S, f"the last held-up request answered {max(after_up):.1f} s after the return"
    assert unreachable <= 5, "while the broker is down, the scorer logs each repeated error once per 30 s"
    assert run.bad_dead_lettered == run.bad_sent, "every malformed event dead-lettered, and nothing else"
    assert report.missing_in_store == 0 and report.drivers == run.drivers
    assert report.worst_rate() == 0.0, f"no event lost or double counted: {report.examples}"
