"""Drive a scorer worker from outside, for the tests and the benchmark: `tripscore score` as a subprocess."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runtime.processes import ServiceProcess, free_port, http_get

__all__ = ["WorkerProcess", "free_port"]


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
