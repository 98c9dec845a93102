"""`tripscore score --workers N`: N independent worker processes in one consumer group, each its own member.

Each worker is a whole `tripscore score` process (its own event loop, core and static member slot) serving
`/metrics` and `/health` on `scorer_web_port + index`; the group shares the `score-requests` partitions out among
them. SIGTERM or SIGINT to this process is passed on to every worker, which stops gracefully.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from runtime.config import Settings
from runtime.processes import settings_env

log = logging.getLogger(__name__)


def worker_overrides(settings: Settings, overrides: dict[str, Any], index: int) -> dict[str, Any]:
    """The settings of worker `index`: the given overrides, its own web port, and (when the instance id is
    fixed) its own static member id; otherwise each worker claims a free member slot itself."""
    own: dict[str, Any] = {**overrides, "scorer_workers": 1, "scorer_web_port": settings.scorer_web_port + index}
    if settings.scorer_instance_id:
        own["scorer_instance_id"] = f"{settings.scorer_instance_id}-{index}"
    return own


def run_workers(settings: Settings, overrides: dict[str, Any], loglevel: str, drift_plot: Path | None) -> int:
    """Start `settings.scorer_workers` workers, pass stop signals on, wait for all; the worst exit code."""
    workers = []
    for index in range(settings.scorer_workers):
        command = [sys.executable, "-m", "tripscore.cli", "score", "--loglevel", loglevel]
        if drift_plot:
            command += ["--drift-plot", str(drift_plot.with_stem(f"{drift_plot.stem}-{index}"))]
        env = settings_env(worker_overrides(settings, overrides, index))
        workers.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL))
    log.info("started %d scorer workers: pids %s", len(workers), " ".join(str(w.pid) for w in workers))

    def pass_on(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, pass_on)
    codes = [worker.wait() for worker in workers]
    log.info("scorer workers exited with %s", codes)
    return max(codes, key=abs)
