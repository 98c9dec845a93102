"""The stream stops the same way whoever stops it: SIGINT or SIGTERM, to its main process or to its whole process
group (Ctrl-C, `kill -- -PGID`), or systemd's default stop (SIGTERM to every process of the service, SIGKILL after a
grace period): exit code 0 within 10 s, no ERROR line and no traceback, and a batch it cut short is replayed on
restart (the store then equals a batch recomputation)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_streaming_job import produce, records

from batch.generate import generate_city
from clients import TripEventProducer
from features.fold import fold
from runtime.config import Settings, load_settings
from runtime.processes import ServiceProcess

pytestmark = [pytest.mark.kafka, pytest.mark.spark]
STOP_WITHIN_S = 10.0
SYSTEMD_GRACE_S = 10.0


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, as a cgroup holds them (the JVM has a session of its own, its workers too)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            found += map(int, children)
            todo += map(int, children)
    return found


def systemd_stop(proc: subprocess.Popen) -> None:
    """systemd's stop with KillMode=control-group: SIGTERM to the main process and every other process of the
    service at once, then SIGKILL to what is left after the grace period."""
    everyone = [proc.pid, *descendants(proc.pid)]
    for member in everyone:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGTERM)
    deadline = time.monotonic() + SYSTEMD_GRACE_S
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    for member in everyone:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def trickle(settings: Settings, messages: list[dict]) -> None:
    """Send `messages` one at a time, about 100 a second."""
    with TripEventProducer(settings) as producer:
        for message in messages:
            assert producer.send(message) is None
            producer.flush()
            time.sleep(0.01)


@pytest.fixture
def settings(kafka_bootstrap: str, new_topic, tmp_path: Path) -> Settings:
    return load_settings(kafka_bootstrap=kafka_bootstrap, sqlite_path=tmp_path / "features.db",
                         topic_trip_events=new_topic(partitions=2), topic_trip_events_dlq=new_topic(partitions=1))


@pytest.mark.parametrize(("signum", "target"), [
    (signal.SIGINT, "process"), (signal.SIGINT, "group"), (signal.SIGTERM, "process"), (signal.SIGTERM, "group"),
    (signal.SIGTERM, "systemd"),
])
def test_a_stop_signal_exits_0_within_10_s_with_no_error_and_nothing_lost(
        settings: Settings, tmp_path: Path, signum: signal.Signals, target: str) -> None:
    messages = list(generate_city(seed=4, drivers=20, days=1).messages())
    checkpoint = tmp_path / "checkpoint"
    job_settings = {"kafka_bootstrap": settings.kafka_bootstrap, "home": tmp_path / "home",
                    "sqlite_path": settings.sqlite_file, "topic_trip_events": settings.topic_trip_events,
                    "topic_trip_events_dlq": settings.topic_trip_events_dlq}
    job = ServiceProcess(["stream", "--checkpoint", str(checkpoint), "--metrics-port", "0", "--trigger-ms", "100",
                          "--max-offsets-per-trigger", "50"], job_settings, tmp_path / "stream.log").start()
    half = len(messages) // 2
    feeder = threading.Thread(target=trickle, args=(settings, messages[20:half]), daemon=True)
    try:
        produce(settings, messages[:20])
        job.wait_until(lambda: any(records(settings, [m["driver_id"] for m in messages[:20]]).values()),
                       "the first records", timeout=240)
        feeder.start()  # records keep arriving: a batch is in flight at the signal, or about to be
        time.sleep(1.0)
        started = time.monotonic()
        if target == "systemd":
            systemd_stop(job.proc)
        else:
            (os.killpg if target == "group" else os.kill)(job.proc.pid, signum)
        code = job.proc.wait(STOP_WITHIN_S + 5)
        took = time.monotonic() - started
    finally:
        job.stop(timeout=5)
        feeder.join(60)
    log = job.log_path.read_text(errors="replace")
    assert (code, took < STOP_WITHIN_S) == (0, True), f"exit code {code} after {took:.1f} s:\n{log[-3000:]}"
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
    assert "stopping" in log

    produce(settings, messages[half:])  # the rest after the stop: the restart takes the batch cut short and these
    env = {**os.environ, **{f"TRIPSCORE_{k.upper()}": str(v) for k, v in job_settings.items()}}
    finish = subprocess.run([sys.executable, "-m", "tripscore.cli", "stream", "--checkpoint", str(checkpoint),
                             "--metrics-port", "0", "--available-now"], env=env, capture_output=True, text=True,
                            timeout=600)
    assert finish.returncode == 0, finish.stdout[-3000:] + finish.stderr[-3000:]
    by_driver: dict[str, list] = {}
    for m in messages:
        by_driver.setdefault(m["driver_id"], []).append((m["ts"], m["event_id"], m["event_type"], m.get("rating")))
    assert records(settings, sorted(by_driver)) == {d: fold(events).to_bins() for d, events in by_driver.items()}
