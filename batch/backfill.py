"""`tripscore backfill`: every driver's final record folded from the event log, bulk-written through the store.

The store's newer-wins write (on `_event_ms`, `_n_events`) means a backfill never clobbers fresher streaming state.
Exact duplicates are applied once (`features.fold.fold_order`), as streaming and the datasets do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pyspark.sql import SparkSession

from batch.eventlog import FOLD_COLUMNS
from batch.pointintime import driver_record, driver_runs
from batch.sparkjob import read_event_log, sorted_by_driver, stage_progress
from featurestore import open_store, store_settings
from featurestore.base import Record
from runtime.config import Settings

COUNTS_SCHEMA = "written long, skipped long, events long, duplicates long"
ArrowPartitionFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


@dataclass(frozen=True)
class BackfillResult:
    """What a backfill did."""

    drivers: int
    written: int
    skipped: int  # the store already held a newer (or equal) version
    events: int
    duplicates: int  # exact duplicates of events applied, left out of the fold
    seconds: float

    @property
    def events_per_s(self) -> float:
        """Events folded and written per second of the Spark job."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One human summary line."""
        return (
            f"backfill: {self.events:,} events ({self.duplicates:,} duplicates) of {self.drivers:,} drivers -> "
            f"{self.written:,} records written, {self.skipped:,} skipped (store newer) in {self.seconds:.1f} s "
            f"= {self.events_per_s:,.0f} events/s"
        )


def partition_backfill(settings: Settings, batch_size: int) -> ArrowPartitionFn:
    """A mapInArrow body: fold each driver of a sorted partition, write the records in batches, yield counts."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        store = open_store(settings)
        written = skipped = events = duplicates = 0
        pending: list[Record] = []

        def flush() -> None:
            nonlocal written, skipped
            if pending:
                result = store.write(pending)
                written, skipped = written + result.written, skipped + result.skipped
                pending.clear()

        for driver, rows in driver_runs(batches):
            record = driver_record(driver, rows)
            pending.append(record)
            events += len(rows)
            duplicates += len(rows) - record[1]["_n_events"]
            if len(pending) >= batch_size:
                flush()
        flush()
        yield pa.RecordBatch.from_pydict({"written": [written], "skipped": [skipped], "events": [events],
                                          "duplicates": [duplicates]})

    return run


def backfill(spark: SparkSession, settings: Settings, events_paths: Path | Sequence[Path], batch_size: int = 2_000,
             progress: bool = True) -> BackfillResult:
    """Fold every driver's events (partitioned and sorted by driver) and write the records partition-parallel.

    `events_paths` must hold each driver's whole log (history and live folders together): a record folded from
    part of it could be newer on `_event_ms` than the stored one, and would replace it."""
    settings = store_settings(settings)
    open_store(settings)  # create the store (and its schema) once, before the tasks race to
    events = sorted_by_driver(read_event_log(spark, events_paths, FOLD_COLUMNS))
    started = time.perf_counter()
    with stage_progress(spark, "backfill", enabled=progress):
        counts = events.mapInArrow(partition_backfill(settings, batch_size), COUNTS_SCHEMA).collect()
    seconds = time.perf_counter() - started
    written = sum(row.written for row in counts)
    skipped = sum(row.skipped for row in counts)
    return BackfillResult(written + skipped, written, skipped, sum(row.events for row in counts),
                          sum(row.duplicates for row in counts), seconds)
