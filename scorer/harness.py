"""Drive a scorer worker from outside, for the tests and the benchmark: a subprocess and a response listener."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from runtime.config import Settings
from runtime.kafka_clients import aiokafka_options
from runtime.processes import ServiceProcess, free_port, http_get

__all__ = ["Responses", "WorkerProcess", "free_port"]


class WorkerProcess(ServiceProcess):
    """`tripscore score` in a subprocess with the given settings (`TRIPSCORE_*`), logging to a file."""

    def __init__(self, settings: dict[str, Any], log_path: Path, web_port: int | None = None,
                 loglevel: str = "info") -> None:
        self.web_port = web_port or free_port()
        super().__init__(["score", "--loglevel", loglevel], {**settings, "scorer_web_port": self.web_port}, log_path)

    def health(self) -> dict[str, Any] | None:
        """The `/health` body (503 = degraded is still an answer), or None while the web server is not up."""
        return self.json_at(f"http://127.0.0.1:{self.web_port}/health")

    def metrics(self) -> str:
        """The Prometheus text of `/metrics`."""
        return http_get(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5) or ""

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Block until `/health` answers; RuntimeError (with the log tail) if the worker dies or is too slow."""
        self.wait_until(lambda: self.health() is not None, "/health", timeout)
        return self.health() or {}

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Responses:
    """Reads a topic from the beginning in a background thread; keeps each message by key with its arrival time.

    aiokafka parses records in C, so the listener stays light next to a worker at hundreds of requests/s
    (kafka-python's pure-Python parsing cost the benchmark's client as much CPU as the worker itself).
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        self.arrived: dict[str, float] = {}  # key -> perf_counter of the first arrival
        self._values: dict[str, list[bytes]] = defaultdict(list)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"responses-{topic}", daemon=True)
        self._thread.start()
        self._consumer = self._call(self._start(settings, topic))
        self._reader = asyncio.run_coroutine_threadsafe(self._read(), self._loop)

    def _call(self, coroutine: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    @staticmethod
    async def _start(settings: Settings, topic: str) -> AIOKafkaConsumer:
        # no group: every partition is read, from the earliest offset
        consumer = AIOKafkaConsumer(topic, **aiokafka_options(settings), group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=5, request_timeout_ms=30_000)
        await consumer.start()
        return consumer

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            with self._lock:
                for records in batches.values():
                    for record in records:
                        key = (record.key or b"").decode()
                        self._values[key].append(record.value)
                        self.arrived.setdefault(key, now)

    def wait_for(self, keys: set[str] | list[str] | dict[str, Any], timeout: float = 30.0,
                 stall: float | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every message of `keys` that arrived before `timeout` s, or before `stall` s passed without progress."""
        wanted = set(keys)
        deadline = time.monotonic() + timeout
        seen, progressed = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                count = len(wanted & self._values.keys())
            if count == len(wanted):
                break
            if count != seen:
                seen, progressed = count, time.monotonic()
            elif stall is not None and time.monotonic() - progressed > stall:
                break
            time.sleep(0.02)
        with self._lock:
            raw = {k: list(self._values[k]) for k in wanted if k in self._values}
        return {k: [json.loads(value) for value in values] for k, values in raw.items()}

    def close(self) -> None:
        self._reader.cancel()
        self._call(self._consumer.stop(), timeout=10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
