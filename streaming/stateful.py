"""Stage 2 of the stream: the per-driver update in `transformWithState`, one call per state bucket and micro-batch.

The row-based processor keeps one value state per bucket of drivers (`parse.bucket_of`): each driver's document
(`driver_state.advance`) by driver id. Every key costs three synchronous round trips to Spark's state server (set
the key, get, update), which took most of a batch when the key was the driver; a bucket pays them once for all its
drivers in the batch (streaming/README.md, Levers measured). `applyInPandasWithState`, before, built pandas frames
for every driver's input and output.
"""

from __future__ import annotations

import base64
import pickle
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
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
from streaming.driver_state import LATE_FIELD, advance, evictable, latest_event_ms, load_state
from streaming.parse import INVALID_KEY, PackedEvent, unpack

RECORD, INVALID, LATE, DUPLICATE, EVICTED = "record", "invalid", "late", "duplicate", "evicted"
OUTPUT_SCHEMA = StructType([
    StructField("kind", StringType(), False),
    StructField("key", BinaryType()),  # record: the driver id; dead letter: the original Kafka key
    StructField("payload", BinaryType()),  # record: JSON [bins, event times]; dead letter: DeadLetter; counts: n
])
STATE_SCHEMA = StructType([StructField("drivers", StringType(), False)])  # `dump_bucket`

OutputRow = tuple[str, bytes | None, bytes]
Entry = tuple[int, bytes]
"""A driver in its bucket: (the event time of its latest event, its saved state)."""
ZSTD = pa.Codec("zstd", compression_level=1)
SIZE = struct.Struct(">Q")  # the pickle's size, before its zstd frame: big-endian, so the first byte is 0 ...
ZLIB_FORM = 0x78  # ... and never this one, which begins the zlib form written before zstd (still read)


def _dead_row(kind: str, event: PackedEvent, problems: list[tuple[str, str]], topic: str) -> OutputRow:
    letter = dead_letter(event.value, problems, stage="stream", topic=topic, partition=event.partition,
                         offset=event.offset)
    return kind, event.key, encode(letter)


def seeds(settings: Settings, driver_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """The store records of drivers seen for the first time (or again after eviction), in one read, through store
    outages shorter than the give-up time."""
    if not driver_ids:
        return {}

    def read() -> list[FeatureRow]:
        return open_store(settings).read(driver_ids, BIN_NAMES)  # opening may fail too: a new worker's first call

    rows = retry(read, what=f"seed read of {len(driver_ids)} drivers", give_up_s=settings.stream_store_giveup_s,
                 retry_on=(StoreError,), fatal=(BadInput,))
    return {row.entity_id: row.bins for row in rows}


def load_bucket(saved: str) -> dict[str, Entry]:
    """A bucket's saved entries by driver id; the inverse of `dump_bucket` (and of its zlib form, before zstd)."""
    packed = base64.b64decode(saved)
    if packed[0] == ZLIB_FORM:
        return pickle.loads(zlib.decompress(packed))
    return pickle.loads(ZSTD.decompress(packed[SIZE.size:], SIZE.unpack_from(packed)[0], asbytes=True))


def dump_bucket(states: dict[str, Entry]) -> str:
    """A bucket's entries as Spark state: compressed, in ASCII text. A binary value state came back from Spark 4.2's
    state server as the Java array's name (`[B@...`), a string intact; the state server converts every value between
    Python, Java and UTF-8 strings, which ASCII and a fifth of the size keep cheap. zstd at level 1: a third of
    zlib's time here, and smaller (streaming/README.md)."""
    raw = pickle.dumps(states, protocol=5)
    return base64.b64encode(SIZE.pack(len(raw)) + ZSTD.compress(raw, asbytes=True)).decode("ascii")


def driver_update(settings: Settings, topic: str, driver_id: str, events: list[PackedEvent], saved: bytes | None,
                  watermark_ms: int, seed: dict[str, Any] | None) -> tuple[Entry | None, list[OutputRow]]:
    """One driver's events of a batch folded into its saved state (`seed`, its store record, when none): (its new
    entry or None to keep it, output rows).

    Records of the invalid key become dead letters; a driver whose fold raises has its events dead-lettered and
    its state kept (the per-driver guard).
    """
    if driver_id == INVALID_KEY:
        return None, [_dead_row(INVALID, e, decode_trip_event(e.value)[1], topic) for e in events]
    try:
        result = advance(saved, [e.fold for e in events], watermark_ms, seed)
    except Exception as exc:
        problem = [(MESSAGE, f"could not be applied: {type(exc).__name__}: {exc}")]
        return None, [_dead_row(INVALID, e, problem, topic) for e in events]
    rows = [_dead_row(LATE, events[i], [(LATE_FIELD, reason)], topic) for i, reason in result.late]
    if result.visible is not None:
        payload = orjson.dumps([result.visible, result.accepted_ms])
        rows.append((RECORD, driver_id.encode(), payload))
    if result.duplicates:
        rows.append((DUPLICATE, None, str(result.duplicates).encode()))
    return (result.latest_ms, result.state), rows


def bucket_update(settings: Settings, topic: str, cells: list[bytes], saved: str | None, watermark_ms: int,
                  idle_ms: int) -> tuple[str | None, list[OutputRow]]:
    """One state bucket's `events` cells of a batch, `driver_update` for each of their drivers, then its idle drivers
    dropped (`evictable`): (the bucket's new state or None to keep it, output rows)."""
    events: dict[str, list[PackedEvent]] = {}
    for cell in cells:
        for driver_id, driver_events in unpack(cell).items():
            events.setdefault(driver_id, []).extend(driver_events)
    entries = {} if saved is None else load_bucket(saved)
    upgraded = [d for d, entry in entries.items() if not isinstance(entry, tuple)]
    for driver_id in upgraded:  # a state saved alone, before eviction existed
        entries[driver_id] = (latest_event_ms(load_state(entries[driver_id])), entries[driver_id])
    first_sight = seeds(settings, [d for d in events if d != INVALID_KEY and d not in entries])
    changed, rows = False, []
    for driver_id, driver_events in events.items():
        saved_state = entries[driver_id][1] if driver_id in entries else None
        new, out = driver_update(settings, topic, driver_id, driver_events, saved_state, watermark_ms,
                                 first_sight.get(driver_id))
        rows += out
        if new is not None:
            entries[driver_id], changed = new, True
    idle = [d for d, (latest_ms, _) in entries.items() if evictable(latest_ms, watermark_ms, idle_ms)]
    for driver_id in idle:
        del entries[driver_id]
    if idle:
        rows.append((EVICTED, None, str(len(idle)).encode()))
    return (dump_bucket(entries) if changed or idle or upgraded else None), rows


class BucketProcessor(StatefulProcessor):
    """The `transformWithState` processor (rows, event time): one value state per bucket of drivers, `bucket_update`."""

    def __init__(self, settings: Settings, topic: str, idle_ms: int) -> None:
        self.settings, self.topic, self.idle_ms = settings, topic, idle_ms

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.state = handle.getValueState("drivers", STATE_SCHEMA)

    def handleInputRows(self, key: tuple[Any, ...], rows: Iterator[Row], timerValues: TimerValues) -> Iterator[Row]:
        cells = [row.events for row in rows]
        saved = self.state.get()
        state, out = bucket_update(self.settings, self.topic, cells, saved and saved[0],
                                   timerValues.getCurrentWatermarkInMs(), self.idle_ms)
        if state is not None:
            self.state.update((state,))
        for kind, out_key, payload in out:
            yield Row(kind=kind, key=out_key, payload=payload)

    def close(self) -> None:
        pass
