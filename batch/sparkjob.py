"""Spark plumbing shared by the batch jobs: reading the event log and a progress bar over running stages."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from tqdm import tqdm

from batch.eventlog import EventLogError, require_columns


def read_event_log(spark: SparkSession, paths: Path | Sequence[Path], columns: Sequence[str],
                   optional: Sequence[str] = ()) -> DataFrame:
    """The Parquet log at `paths` (one or more folders or files) with `columns` (and whichever `optional` ones
    exist); a clear error otherwise."""
    paths = [paths] if isinstance(paths, Path) else list(paths)
    for path in paths:
        if not path.exists():
            raise EventLogError(f"{path}: no event log (run `tripscore generate` first?)")
    frame = spark.read.parquet(*(str(path.resolve()) for path in paths))
    require_columns(frame.columns, columns, ", ".join(map(str, paths)))
    return frame.select(*columns, *[name for name in optional if name in frame.columns])


def sorted_by_driver(frame: DataFrame) -> DataFrame:
    """`frame` hash-partitioned by driver and sorted by (driver_id, ts_ms, event_id) within partitions: each
    driver's events are contiguous and in the fold's `order_key` order."""
    return frame.repartition("driver_id").sortWithinPartitions("driver_id", "ts_ms", "event_id")


@contextmanager
def stage_progress(spark: SparkSession, desc: str, enabled: bool = True, poll_s: float = 1.0) -> Iterator[None]:
    """A tqdm bar of completed tasks over every Spark stage that runs inside the block."""
    if not enabled:
        yield
        return
    tracker = spark.sparkContext.statusTracker()
    stages: dict[int, tuple[int, int]] = {}
    bar = tqdm(total=0, desc=desc, unit="task", mininterval=1.0)
    stop = threading.Event()

    def poll() -> None:
        while True:
            active = set(tracker.getActiveStageIds())
            for stage_id in stages.keys() - active:  # finished since the last poll
                stages[stage_id] = (stages[stage_id][0],) * 2
            for stage_id in active:
                info = tracker.getStageInfo(stage_id)
                if info is not None:
                    stages[stage_id] = (info.numTasks, info.numCompletedTasks)
            bar.total = sum(total for total, _ in stages.values())
            bar.update(sum(done for _, done in stages.values()) - bar.n)
            if stop.wait(poll_s):
                return

    thread = threading.Thread(target=poll, name="spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.update(bar.total - bar.n)
        bar.close()
