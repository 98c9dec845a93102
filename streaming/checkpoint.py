"""The state layout a checkpoint was built with: its drivers' state buckets, recorded at its first run.

A driver's state is found under its bucket (`parse.bucket_of`), so resuming with another bucket count would read
drivers in the wrong buckets and resurface stale states: a run that asks for another count is refused with one
clear line, and one that asks for none resumes with the checkpoint's.
"""

from __future__ import annotations

import json
from pathlib import Path

LAYOUT_FILE = "tripscore-state.json"
DEFAULT_BUCKETS = 64
"""A new checkpoint's bucket count when none is asked for: 32 for each of the default 2 state partitions
(streaming/README.md, Levers measured)."""


class CheckpointMismatch(RuntimeError):
    """The checkpoint's state was built with another layout than this run's."""


def state_buckets(checkpoint: Path, asked: int | None) -> int:
    """This run's bucket count: the checkpoint's own, or for a new checkpoint `asked` (else `DEFAULT_BUCKETS`),
    recorded in it. Raises `CheckpointMismatch` when `asked` differs from the checkpoint's, or for a checkpoint of
    the version that kept one state per driver (it has offsets but no layout)."""
    path = checkpoint / LAYOUT_FILE
    restart = "start a new --checkpoint (each driver then starts from its store record)"
    if path.exists():
        built = _recorded_buckets(path)
        if asked is not None and built != asked:
            raise CheckpointMismatch(f"checkpoint {checkpoint} keeps driver state in {built} buckets, this run asks "
                                     f"for {asked} (--state-buckets, TRIPSCORE_STREAM_STATE_BUCKETS): use {built}, "
                                     f"or {restart}")
        return built
    if (checkpoint / "offsets").exists():
        raise CheckpointMismatch(f"checkpoint {checkpoint} was written by a version that kept one state per driver; "
                                 f"{restart}")
    buckets = DEFAULT_BUCKETS if asked is None else asked
    checkpoint.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"state_buckets": buckets}) + "\n")
    return buckets


def _recorded_buckets(path: Path) -> int:
    """The bucket count a layout file records; `CheckpointMismatch` naming the file when it cannot be read."""
    try:
        built = json.loads(path.read_text())["state_buckets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointMismatch(f"{path} cannot be read ({type(exc).__name__}: {exc}): restore it from a copy of "
                                 "the checkpoint, or start a new --checkpoint") from None
    if type(built) is not int or built < 1:
        raise CheckpointMismatch(f"{path}: state_buckets must be a positive integer, got {built!r}")
    return built
