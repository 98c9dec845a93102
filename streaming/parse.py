"""Stage 1 of the stream: decode and validate raw `trip-events` records with the shared contract.

Arrow in (the Kafka source's columns), no pandas: this runs per record, and pandas conversions cost more than the
decode. The update (`streaming.update`) groups the valid records by driver; the benchmark's floor keeps only their
event times (`event_times`), so both pay the same decode.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from features.fold import EventTuple
from schemas.fields import Problem
from schemas.messages import decode_trip_event

RAW_COLUMNS = ("key", "value", "partition", "offset")
TIMES_SCHEMA = pa.schema([("event_ms", pa.int64())])
"""`event_times`' output: each record's event time, null when it is invalid."""


@dataclass(frozen=True, slots=True)
class KafkaEvent:
    """A record as the update sees it: the fold's tuple (None when invalid) and where the record came from."""

    fold: EventTuple | None
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class Parsed:
    """A partition's records: the valid ones by driver (Kafka order within each), the invalid ones with why."""

    by_driver: dict[str, list[KafkaEvent]] = field(default_factory=dict)
    invalid: list[tuple[KafkaEvent, list[Problem]]] = field(default_factory=list)
    records: int = 0


def _records(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[bytes | None, bytes | None, int, int]]:
    for batch in batches:
        yield from zip(*(batch.column(name).to_pylist() for name in RAW_COLUMNS), strict=True)


def parse(batches: Iterable[pa.RecordBatch]) -> Parsed:
    """Every record of `batches` (`RAW_COLUMNS`) decoded, validated and sorted into `Parsed`."""
    parsed = Parsed()
    by_driver = parsed.by_driver
    for key, value, partition, offset in _records(batches):
        parsed.records += 1
        event, problems = decode_trip_event(value)
        if event is None:
            parsed.invalid.append((KafkaEvent(None, partition, offset, key, value or b""), problems))
            continue
        fold = (event["ts_ms"], event["event_id"], event["event_type"], event["rating"])
        events = by_driver.get(event["driver_id"])
        if events is None:
            events = by_driver[event["driver_id"]] = []
        events.append(KafkaEvent(fold, partition, offset, key, value))
    return parsed


def event_times(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The floor's stage (`bench/stream_floor.py`): each record decoded and validated as `parse` does; its event
    time out (`TIMES_SCHEMA`)."""
    for batch in batches:
        times = []
        for value in batch.column("value").to_pylist():
            event, _ = decode_trip_event(value)
            times.append(None if event is None else event["ts_ms"])
        yield pa.RecordBatch.from_arrays([pa.array(times, pa.int64())], schema=TIMES_SCHEMA)
