"""The state layout a checkpoint was built with: its drivers' state buckets, recorded at its first run.

A driver's state is found under its bucket (`parse.bucket_of`), so resuming with another bucket count would read
drivers in the wrong buckets and resurface stale states; such a run is refused with one clear line.
"""

from __future__ import annotations

import json
from pathlib import Path

LAYOUT_FILE = "tripscore-state.json"


class CheckpointMismatch(RuntimeError):
    """The checkpoint's state was built with another layout than this run's."""


def check_layout(checkpoint: Path, buckets: int) -> None:
    """Record `buckets` in a new checkpoint; raise `CheckpointMismatch` for one built with another count, or by a
    version that kept one state per driver (it has offsets but no layout)."""
    path = checkpoint / LAYOUT_FILE
    restart = "start a new --checkpoint (each driver then starts from its store record)"
    if path.exists():
        built = json.loads(path.read_text())["state_buckets"]
        if built != buckets:
            raise CheckpointMismatch(f"checkpoint {checkpoint} keeps driver state in {built} buckets, this run asks "
                                     f"for {buckets} (--state-buckets, TRIPSCORE_STREAM_STATE_BUCKETS): use {built}, "
                                     f"or {restart}")
    elif (checkpoint / "offsets").exists():
        raise CheckpointMismatch(f"checkpoint {checkpoint} was written by a version that kept one state per driver; "
                                 f"{restart}")
    else:
        checkpoint.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"state_buckets": buckets}) + "\n")
