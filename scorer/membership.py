"""Static consumer-group membership: a restarted worker takes over its predecessor's member id, so no rebalance.

Without it, a worker killed with -9 keeps its partitions until the group's session timeout expires (10 s) and
requests wait that long. With a stable `group.instance.id`, the restarted worker rejoins as the same member and
the broker hands its partitions straight back.
"""

from __future__ import annotations

import fcntl
import socket
from pathlib import Path
from typing import IO

MAX_SLOTS = 256
_held: list[IO[str]] = []  # slot locks live as long as the process; the kernel releases them when it dies


def claim_instance_id(lock_dir: Path, host: str | None = None) -> str:
    """`<host>-<slot>` for the lowest slot no live worker of this app holds on this host (an flock per slot)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        handle = (lock_dir / f"member-{slot}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held.append(handle)
        return f"{host or socket.gethostname()}-{slot}"
    raise RuntimeError(f"more than {MAX_SLOTS} scorer workers of one app on this host ({lock_dir})")
