"""Drive a scorer worker from outside, for the tests and the benchmark: a subprocess and a response listener."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from tripscore.config import ENV_PREFIX


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WorkerProcess:
    """`tripscore score` in a subprocess with the given settings (`TRIPSCORE_*`), logging to a file."""

    def __init__(self, settings: dict[str, Any], log_path: Path, web_port: int | None = None,
                 loglevel: str = "info") -> None:
        self.web_port = web_port or free_port()
        self.env = {**os.environ, **{ENV_PREFIX + k.upper(): str(v) for k, v in settings.items()},
                    f"{ENV_PREFIX}SCORER_WEB_PORT": str(self.web_port)}
        self.log_path = log_path
        self.loglevel = loglevel
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tripscore.cli", "score", "--loglevel", self.loglevel],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def health(self) -> dict[str, Any] | None:
        """The `/health` body, or None while the web server is not up."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health", timeout=2) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:  # 503 = degraded, still an answer
            return json.loads(exc.read())
        except OSError:
            return None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5) as answer:
            return answer.read().decode()

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Block until `/health` answers; RuntimeError (with the log tail) if the worker dies or is too slow."""
        deadline = time.monotonic() + timeout
        while (body := self.health()) is None:
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"scorer worker not ready (exit {self.proc and self.proc.poll()}):\n{tail}")
            time.sleep(0.2)
        return body

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


class Responses:
    """Reads a topic from the beginning in a thread; keeps each message by key with its arrival time."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.arrived: dict[str, float] = {}  # key -> perf_counter of the first arrival
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                       fetch_max_wait_ms=5, request_timeout_ms=30_000)
        partitions = [TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic) or ())]
        self._consumer.assign(partitions)
        self._consumer.seek_to_beginning(*partitions)
        self._thread = threading.Thread(target=self._run, name=f"responses-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=50).values():
                now = time.perf_counter()
                with self._lock:
                    for record in records:
                        key = (record.key or b"").decode()
                        self.by_key[key].append(json.loads(record.value))
                        self.arrived.setdefault(key, now)

    def wait_for(self, keys: set[str] | list[str] | dict[str, Any], timeout: float = 30.0,
                 stall: float | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every message of `keys` that arrived before `timeout` s, or before `stall` s passed without progress."""
        wanted = set(keys)
        deadline = time.monotonic() + timeout
        seen, progressed = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                count = len(wanted & self.by_key.keys())
            if count == len(wanted):
                break
            if count != seen:
                seen, progressed = count, time.monotonic()
            elif stall is not None and time.monotonic() - progressed > stall:
                break
            time.sleep(0.02)
        with self._lock:
            return {k: list(self.by_key[k]) for k in wanted if k in self.by_key}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()
