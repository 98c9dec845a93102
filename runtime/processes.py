"""Child processes of tripscore commands (stream, score) for the demo, tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime.config import ENV_PREFIX


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_env(settings: Mapping[str, Any]) -> dict[str, str]:
    """This process's environment plus `settings` as `TRIPSCORE_*` variables (`None`: not set here)."""
    return {**os.environ,
            **{ENV_PREFIX + key.upper(): str(value) for key, value in settings.items() if value is not None}}


def http_get(url: str, timeout: float = 2.0) -> str | None:
    """The body at `url` (an HTTP error status still returns its body), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()
    except OSError:
        return None


class ServiceProcess:
    """`tripscore <command>` in its own process group, configured through `TRIPSCORE_*`, logging to a file."""

    def __init__(self, command: Sequence[str], settings: Mapping[str, Any], log_path: Path) -> None:
        self.command = [sys.executable, "-m", "tripscore.cli", *command]
        self.env = settings_env(settings)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        """Launch the process (stdin closed, output to the log file)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's log."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
        """Poll `ready` until true; RuntimeError with the log tail if the process dies or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.alive or time.monotonic() > deadline:
                state = "exited" if not self.alive else "timed out"
                raise RuntimeError(f"{' '.join(self.command[3:])}: {state} waiting for {what}:\n{self.log_tail()}")
            time.sleep(0.25)

    def json_at(self, url: str) -> dict[str, Any] | None:
        """The JSON body at `url`, or None."""
        body = http_get(url)
        try:
            return json.loads(body) if body else None
        except json.JSONDecodeError:
            return None

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash."""
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM the service (it shuts down gracefully), wait, then SIGKILL whatever is left of its group."""
        if self.proc is None:
            return None
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the JVM or workers a killed leader may leave behind
        self.proc.wait(10)
        return self.proc.returncode
