"""Stage 2 of the stream: the per-driver update in `transformWithState`, one call per state bucket and micro-batch.

The row-based processor keeps one value state per bucket of drivers (`parse.bucket_of`): each driver's document
(`driver_state.advance`) by driver id. Every key costs three synchronous round trips to Spark's state server (set
the key, get, update), which took most of a batch when the key was the driver; a bucket pays them once for all its
drivers in the batch (streaming/README.md, Levers measured). `applyInPandasWithState`, before, built pandas frames
for every driver's input and output.
"""

from __future__ import annotations

import base64
import json
import pickle
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pyspark.sql import Row
from pyspark.sql.streaming.stateful_processor import StatefulProcessor, StatefulProcessorHandle, TimerValues
from pyspark.sql.types import BinaryType, StringType, StructField, StructType

from featurestore import open_store
from featurestore.base import BadInput, FeatureRow, StoreError
from runtime.config import Settings
from runtime.retry import retry
from schemas.features import BIN_NAMES
from schemas.messages import MESSAGE, dead_letter, decode_trip_event, encode
from streaming.driver_state import LATE_FIELD, advance
from streaming.parse import INVALID_KEY, PackedEvent, unpack

RECORD, INVALID, LATE, DUPLICATE = "record", "invalid", "late", "duplicate"
OUTPUT_SCHEMA = StructType([
    StructField("kind", StringType(), False),
    StructField("key", BinaryType()),  # record: the driver id; dead letter: the original Kafka key
    StructField("payload", BinaryType()),  # record: JSON [bins, event times]; dead letter: DeadLetter; duplicate: n
])
STATE_SCHEMA = StructType([StructField("drivers", StringType(), False)])  # `dump_bucket`

OutputRow = tuple[str, bytes | None, bytes]
ZSTD = pa.Codec("zstd", compression_level=1)
SIZE = struct.Struct(">Q")  # the pickle's size, before its zstd frame: big-endian, so the first byte is 0 ...
ZLIB_FORM = 0x78  # ... and never this one, which begins the zlib form written before zstd (still read)


def _dead_row(kind: str, event: PackedEvent, problems: list[tuple[str, str]], topic: str) -> OutputRow:
    letter = dead_letter(event.value, problems, stage="stream", topic=topic, partition=event.partition,
                         offset=event.offset)
    return kind, event.key, encode(letter)


def _seed(settings: Settings, driver_id: str) -> dict[str, Any] | None:
    """The driver's store record on first sight, read through store outages shorter than the give-up time."""
    def read() -> list[FeatureRow]:
        return open_store(settings).read([driver_id], BIN_NAMES)  # opening may fail too: a new worker's first call

    return retry(read, what=f"seed read of driver {driver_id}", give_up_s=settings.stream_store_giveup_s,
                 retry_on=(StoreError,), fatal=(BadInput,))[0].bins


def load_bucket(saved: str) -> dict[str, bytes]:
    """A bucket's saved states by driver id; the inverse of `dump_bucket` (and of its zlib form, before zstd)."""
    packed = base64.b64decode(saved)
    if packed[0] == ZLIB_FORM:
        return pickle.loads(zlib.decompress(packed))
    return pickle.loads(ZSTD.decompress(packed[SIZE.size:], SIZE.unpack_from(packed)[0], asbytes=True))


def dump_bucket(states: dict[str, bytes]) -> str:
    """A bucket's states as Spark state: compressed, in ASCII text. A binary value state came back from Spark 4.2's
    state server as the Java array's name (`[B@...`), a string intact; the state server converts every value between
    Python, Java and UTF-8 strings, which ASCII and a fifth of the size keep cheap. zstd at level 1: a third of
    zlib's time here, and smaller (streaming/README.md)."""
    raw = pickle.dumps(states, protocol=5)
    return base64.b64encode(SIZE.pack(len(raw)) + ZSTD.compress(raw, asbytes=True)).decode("ascii")


def driver_update(settings: Settings, topic: str, driver_id: str, events: list[PackedEvent], saved: bytes | None,
                  watermark_ms: int) -> tuple[bytes | None, list[OutputRow]]:
    """One driver's events of a batch folded into its saved state: (the new state or None to keep it, output rows).

    Records of the invalid key become dead letters; a driver whose fold raises has its events dead-lettered and
    its state kept (the per-driver guard).
    """
    if driver_id == INVALID_KEY:
        return None, [_dead_row(INVALID, e, decode_trip_event(e.value)[1], topic) for e in events]
    seed = None if saved is not None else _seed(settings, driver_id)
    try:
        result = advance(saved, [e.fold for e in events], watermark_ms, seed)
    except Exception as exc:
        problem = [(MESSAGE, f"could not be applied: {type(exc).__name__}: {exc}")]
        return None, [_dead_row(INVALID, e, problem, topic) for e in events]
    rows = [_dead_row(LATE, events[i], [(LATE_FIELD, reason)], topic) for i, reason in result.late]
    if result.visible is not None:
        payload = json.dumps([result.visible, result.accepted_ms], separators=(",", ":")).encode()
        rows.append((RECORD, driver_id.encode(), payload))
    if result.duplicates:
        rows.append((DUPLICATE, None, str(result.duplicates).encode()))
    return result.state, rows


def bucket_update(settings: Settings, topic: str, cells: list[bytes], saved: str | None,
                  watermark_ms: int) -> tuple[str | None, list[OutputRow]]:
    """One state bucket's `events` cells of a batch, `driver_update` for each of their drivers: (the bucket's new
    state or None to keep it, output rows)."""
    events: dict[str, list[PackedEvent]] = {}
    for cell in cells:
        for driver_id, driver_events in unpack(cell).items():
            events.setdefault(driver_id, []).extend(driver_events)
    states = {} if saved is None else load_bucket(saved)
    changed, rows = False, []
    for driver_id, driver_events in events.items():
        state, out = driver_update(settings, topic, driver_id, driver_events, states.get(driver_id), watermark_ms)
        rows += out
        if state is not None:
            states[driver_id], changed = state, True
    return (dump_bucket(states) if changed else None), rows


class BucketProcessor(StatefulProcessor):
    """The `transformWithState` processor (rows, event time): one value state per bucket of drivers, `bucket_update`."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings, self.topic = settings, topic

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.state = handle.getValueState("drivers", STATE_SCHEMA)

    def handleInputRows(self, key: tuple[Any, ...], rows: Iterator[Row], timerValues: TimerValues) -> Iterator[Row]:
        cells = [row.events for row in rows]
        saved = self.state.get()
        state, out = bucket_update(self.settings, self.topic, cells, saved and saved[0],
                                   timerValues.getCurrentWatermarkInMs())
        if state is not None:
            self.state.update((state,))
        for kind, out_key, payload in out:
            yield Row(kind=kind, key=out_key, payload=payload)

    def close(self) -> None:
        pass
