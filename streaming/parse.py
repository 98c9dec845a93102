"""Stage 1 of the stream: decode and validate raw `trip-events` records with the shared contract (mapInPandas).

Each record leaves as (driver_id, ts_ms, event): `event` packs what stage 2 needs into one binary column, the
fold's fields and the record's origin (a JSON header line) followed by the original value bytes for the DLQ.
One column instead of seven matters: stage 2 pays a pandas conversion per column for every driver and batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
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


@dataclass(frozen=True, slots=True)
class PackedEvent:
    """A record as stage 2 sees it: the fold's tuple (None when invalid) and where the record came from."""

    fold: EventTuple | None
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def pack(event: dict | None, key: bytes | None, value: bytes | None, partition: int, offset: int) -> bytes:
    """One `event` cell: JSON header line, then the original value."""
    fold = [event["event_id"], event["event_type"], event["rating"]] if event is not None else None
    header = json.dumps([fold, partition, offset, None if key is None else key.hex()], separators=(",", ":"))
    return header.encode() + b"\n" + (value or b"")


def unpack(cell: bytes, ts_ms: int | None) -> PackedEvent:
    """The inverse of `pack`; `ts_ms` is the event time carried in its own column."""
    header, _, value = cell.partition(b"\n")
    fold, partition, offset, key = json.loads(header)
    return PackedEvent(
        fold=None if fold is None else (ts_ms, fold[0], fold[1], fold[2]),
        partition=partition,
        offset=offset,
        key=None if key is None else bytes.fromhex(key),
        value=value,
    )


def parse_frames(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Kafka rows (`RAW_COLUMNS`) to `PARSED_SCHEMA` rows; an invalid record gets `INVALID_KEY` and no time."""
    for frame in frames:
        driver_ids, ts, cells = [], [], []
        for key, value, partition, offset in zip(*(frame[c].tolist() for c in RAW_COLUMNS), strict=True):
            event, _ = decode_trip_event(value)
            driver_ids.append(INVALID_KEY if event is None else event["driver_id"])
            ts.append(None if event is None else event["ts_ms"])
            cells.append(pack(event, key, value, partition, offset))
        yield pd.DataFrame({"driver_id": driver_ids, "ts_ms": pd.array(ts, dtype="Int64"), "event": cells})
