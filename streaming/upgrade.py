"""Resuming a checkpoint of an earlier version, which kept the drivers' state in Spark (`transformWithState`).

Its offsets and commits are this query's too; its Spark state is not: this version keeps each driver's state in its
store record, and Spark refuses a checkpoint whose state metadata names an operator the query no longer has. The
state is moved aside, not deleted, so the earlier version can still resume from it.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)
RETIRED = "spark-state-retired"
"""Where an earlier version's Spark state goes, inside the checkpoint folder."""
EARLIER_STATE = ("state", "tripscore-state.json")  # the state store, and the bucket layout of the version before


def retire_spark_state(checkpoint: Path) -> bool:
    """Move an earlier version's Spark state in `checkpoint` into `RETIRED`; whether there was any."""
    found = [checkpoint / name for name in EARLIER_STATE if (checkpoint / name).exists()]
    if not found:
        return False
    retired = checkpoint / RETIRED
    retired.mkdir(exist_ok=True)
    for path in found:
        path.rename(retired / path.name)
    log.info("checkpoint %s kept the drivers' state in Spark (an earlier version); the store records hold it now. "
             "Its offsets are resumed, and its Spark state moved to %s (delete it once no rollback is planned)",
             checkpoint, retired)
    return True
