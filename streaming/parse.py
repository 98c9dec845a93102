"""Stage 1 of the stream: decode and validate raw `trip-events` records with the shared contract (mapInArrow).

Each record leaves as (driver_id, ts_ms, event): `event` packs what stage 2 needs into one binary column (marshal,
both stages run the same Python): the fold's fields, the record's origin and its original bytes for the DLQ.
One column instead of seven matters: stage 2 converts every cell of every row into a Python object.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import BinaryType, LongType, StringType, StructField, StructType

from features.fold import EventTuple
from schemas.messages import decode_trip_event

INVALID_KEY = ""
"""Grouping key of records that fail validation (never a valid driver id); stage 2 dead-letters them."""
RAW_COLUMNS = ("key", "value", "partition", "offset")
PARSED_SCHEMA = StructType([
    StructField("driver_id", StringType(), False),
    StructField("ts_ms", LongType()),
    StructField("event", BinaryType(), False),
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


def pack(event: dict | None, key: bytes | None, value: bytes | None, partition: int, offset: int) -> bytes:
    """One `event` cell."""
    fold = None if event is None else (event["ts_ms"], event["event_id"], event["event_type"], event["rating"])
    return marshal.dumps((fold, partition, offset, key, value or b""))


def unpack(cell: bytes) -> PackedEvent:
    """The inverse of `pack`."""
    return PackedEvent(*marshal.loads(cell))


def parse_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Kafka rows (`RAW_COLUMNS`) to `PARSED_SCHEMA` rows; an invalid record gets `INVALID_KEY` and no time.

    Arrow in and out (no pandas): this stage runs per event, and pandas conversions cost more than the decode.
    """
    for batch in batches:
        driver_ids, ts, cells = [], [], []
        for key, value, partition, offset in zip(*(batch.column(c).to_pylist() for c in RAW_COLUMNS), strict=True):
            event, _ = decode_trip_event(value)
            driver_ids.append(INVALID_KEY if event is None else event["driver_id"])
            ts.append(None if event is None else event["ts_ms"])
            cells.append(pack(event, key, value, partition, offset))
        yield pa.RecordBatch.from_arrays([pa.array(driver_ids, pa.string()), pa.array(ts, pa.int64()),
                                          pa.array(cells, pa.binary())], schema=_ARROW_SCHEMA)
