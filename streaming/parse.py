"""Stage 1 of the stream: decode and validate raw `trip-events` records with the shared contract (mapInArrow).

Records leave packed per state bucket (`bucket_of`, stage 2's key) and Arrow batch, one row (bucket, ts_ms,
event_ms, events) for each: `events` packs what stage 2 needs of the bucket's records, by driver, into one binary
cell (marshal, both stages run the same Python): the fold's fields, each record's origin and its original bytes
for the DLQ. Stage 2 converts every row into a Python object and pays round trips to Spark's state server per key:
one row per bucket and Arrow batch keeps both costs per bucket, not per record or driver.
"""

from __future__ import annotations

import marshal
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import ArrayType, BinaryType, IntegerType, LongType, StructField, StructType

from features.fold import EventTuple
from featurestore.base import now_ms
from schemas.messages import decode_trip_event

INVALID_KEY = ""
"""Grouping key of records that fail validation (never a valid driver id); stage 2 dead-letters them."""
RAW_COLUMNS = ("key", "value", "partition", "offset")
PARSED_SCHEMA = StructType([
    StructField("bucket", IntegerType(), False),  # the state bucket of the row's drivers
    StructField("ts_ms", LongType()),  # the watermark's column: the row's latest event time, at most the clock
    StructField("event_ms", ArrayType(LongType()), False),  # each record's event time (null when invalid)
    StructField("events", BinaryType(), False),  # the records by driver, `pack`ed
])
_ARROW_SCHEMA = to_arrow_schema(PARSED_SCHEMA)


@dataclass(frozen=True, slots=True)
class PackedEvent:
    """A record as stage 2 sees it: the fold's tuple (None when invalid) and where the record came from."""

    fold: EventTuple | None
    partition: int
    offset: int
    key: bytes | None
    value: bytes


Record = tuple[EventTuple | None, int, int, bytes | None, bytes]
"""The fields of a `PackedEvent`, as packed."""


def record(event: dict | None, key: bytes | None, value: bytes | None, partition: int, offset: int) -> Record:
    """One record's fields for `pack`: the decoded event (None when invalid) and its origin."""
    fold = None if event is None else (event["ts_ms"], event["event_id"], event["event_type"], event["rating"])
    return fold, partition, offset, key, value or b""


def bucket_of(driver_id: str, buckets: int) -> int:
    """The state bucket of a driver among `buckets`: the same in every process and version (CRC-32 of the id)."""
    return zlib.crc32(driver_id.encode("utf-8", "surrogatepass")) % buckets


def pack(by_driver: dict[str, list[Record]]) -> bytes:
    """One `events` cell: its drivers' records."""
    return marshal.dumps(by_driver)


def unpack(cell: bytes) -> dict[str, list[PackedEvent]]:
    """The inverse of `pack`."""
    return {driver_id: [PackedEvent(*fields) for fields in records]
            for driver_id, records in marshal.loads(cell).items()}


def parse_batches(batches: Iterator[pa.RecordBatch], buckets: int) -> Iterator[pa.RecordBatch]:
    """Kafka rows (`RAW_COLUMNS`) to `PARSED_SCHEMA` rows, one per state bucket of each batch (`bucket_of`; drivers
    in the order of first appearance, records and `event_ms` in Kafka order); invalid records go under `INVALID_KEY`.

    Arrow in and out (no pandas): this stage runs per record, and pandas conversions cost more than the decode.
    `ts_ms` is capped at the clock: one event from a device whose clock is years ahead is folded for its driver, but
    must not move the watermark (and so make every other driver's out-of-order events late). Capped here, not with
    Spark's `current_timestamp()`, which each micro-batch inlines as a new literal: new code to compile every batch.
    """
    for batch in batches:
        clock_ms = now_ms()
        by_bucket: dict[int, tuple[list[int | None], dict[str, list[Record]]]] = {}
        bucket_by_driver: dict[str, int] = {}
        for key, value, partition, offset in zip(*(batch.column(c).to_pylist() for c in RAW_COLUMNS), strict=True):
            event, _ = decode_trip_event(value)
            driver_id = INVALID_KEY if event is None else event["driver_id"]
            bucket = bucket_by_driver.get(driver_id)
            if bucket is None:
                bucket = bucket_by_driver[driver_id] = bucket_of(driver_id, buckets)
            times, by_driver = by_bucket.setdefault(bucket, ([], {}))
            times.append(None if event is None else event["ts_ms"])
            by_driver.setdefault(driver_id, []).append(record(event, key, value, partition, offset))
        rows = by_bucket.values()
        latest = [max((t for t in times if t is not None), default=None) for times, _ in rows]
        columns = [list(by_bucket), [None if t is None else min(t, clock_ms) for t in latest],
                   [times for times, _ in rows], [pack(by_driver) for _, by_driver in rows]]
        yield pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(columns, _ARROW_SCHEMA, strict=True)],
                                         schema=_ARROW_SCHEMA)
