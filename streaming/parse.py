"""Stage 1 of the stream: decode and validate raw `trip-events` records with the shared contract (mapInArrow).

Records leave packed per driver and Arrow batch, one row (driver_id, ts_ms, event_ms, events) for each: `events`
packs what stage 2 needs of the driver's records into one binary cell (marshal, both stages run the same Python):
the fold's fields, each record's origin and its original bytes for the DLQ. Stage 2 converts every cell of every
row into a Python object, at about 20 us a row: one row per driver and Arrow batch instead of one per record
keeps that cost per driver, and its input is only the key and this cell.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import ArrayType, BinaryType, LongType, StringType, StructField, StructType

from features.fold import EventTuple
from schemas.messages import decode_trip_event

INVALID_KEY = ""
"""Grouping key of records that fail validation (never a valid driver id); stage 2 dead-letters them."""
RAW_COLUMNS = ("key", "value", "partition", "offset")
PARSED_SCHEMA = StructType([
    StructField("driver_id", StringType(), False),
    StructField("ts_ms", LongType()),  # the latest event time of the row's records: the watermark's column
    StructField("event_ms", ArrayType(LongType()), False),  # each record's event time (null when invalid)
    StructField("events", BinaryType(), False),  # the records, `pack`ed
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


def pack(records: list[Record]) -> bytes:
    """One `events` cell."""
    return marshal.dumps(records)


def unpack(cell: bytes) -> list[PackedEvent]:
    """The inverse of `pack`."""
    return [PackedEvent(*fields) for fields in marshal.loads(cell)]


def parse_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Kafka rows (`RAW_COLUMNS`) to `PARSED_SCHEMA` rows, one per driver of each batch (in the order of first
    appearance, records in Kafka order); invalid records go under `INVALID_KEY`.

    Arrow in and out (no pandas): this stage runs per record, and pandas conversions cost more than the decode.
    """
    for batch in batches:
        by_driver: dict[str, tuple[list[int | None], list[Record]]] = {}
        for key, value, partition, offset in zip(*(batch.column(c).to_pylist() for c in RAW_COLUMNS), strict=True):
            event, _ = decode_trip_event(value)
            times, records = by_driver.setdefault(INVALID_KEY if event is None else event["driver_id"], ([], []))
            times.append(None if event is None else event["ts_ms"])
            records.append(record(event, key, value, partition, offset))
        rows = by_driver.values()
        columns = [list(by_driver), [max((t for t in times if t is not None), default=None) for times, _ in rows],
                   [times for times, _ in rows], [pack(records) for _, records in rows]]
        yield pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(columns, _ARROW_SCHEMA, strict=True)],
                                         schema=_ARROW_SCHEMA)
