"""Stage 2 of the stream: the per-driver update run by `applyInPandasWithState`, one call per driver and batch."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
from pyspark.sql.streaming.state import GroupState
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
OUTPUT_SCHEMA = StructType([  # few columns: each costs a pandas conversion per driver and batch
    StructField("kind", StringType(), False),
    StructField("key", BinaryType()),  # record: the driver id; dead letter: the original Kafka key
    StructField("payload", BinaryType()),  # record: JSON [bins, event times]; dead letter: DeadLetter; duplicate: n
])
STATE_SCHEMA = StructType([StructField("state", StringType(), False)])
_COLUMNS = [field.name for field in OUTPUT_SCHEMA.fields]

UpdateFunction = Callable[[tuple[Any, ...], Iterator[pd.DataFrame], GroupState], Iterator[pd.DataFrame]]


def _rows(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(dict(zip(_COLUMNS, map(list, zip(*rows, strict=True)), strict=True)))


def _dead_row(kind: str, event: PackedEvent, problems: list[tuple[str, str]], topic: str) -> tuple:
    letter = dead_letter(event.value, problems, stage="stream", topic=topic, partition=event.partition,
                         offset=event.offset)
    return kind, event.key, encode(letter)


def _seed(settings: Settings, driver_id: str) -> dict[str, Any] | None:
    """The driver's store record on first sight, read through store outages shorter than the give-up time."""
    def read() -> list[FeatureRow]:
        return open_store(settings).read([driver_id], BIN_NAMES)  # opening may fail too: a new worker's first call

    return retry(read, what=f"seed read of driver {driver_id}", give_up_s=settings.stream_store_giveup_s,
                 retry_on=(StoreError,), fatal=(BadInput,))[0].bins


def update_function(settings: Settings, topic: str) -> UpdateFunction:
    """The `applyInPandasWithState` function: invalid records to dead letters, valid ones into driver state."""

    def update(key: tuple[Any, ...], frames: Iterator[pd.DataFrame], state: GroupState) -> Iterator[pd.DataFrame]:
        driver_id = key[0]
        if driver_id == INVALID_KEY:
            for frame in frames:
                events = [unpack(cell) for cell in frame["event"].tolist()]
                yield _rows([_dead_row(INVALID, e, decode_trip_event(e.value)[1], topic) for e in events])
            return
        events = [unpack(cell) for frame in frames for cell in frame["event"].tolist()]
        saved = state.get[0] if state.exists else None
        seed = None if saved is not None else _seed(settings, driver_id)
        try:
            result = advance(saved, [e.fold for e in events], state.getCurrentWatermarkMs(), seed)
        except Exception as exc:  # the per-driver guard: its events go to the DLQ, its state stays as it was
            problem = [(MESSAGE, f"could not be applied: {type(exc).__name__}: {exc}")]
            yield _rows([_dead_row(INVALID, e, problem, topic) for e in events])
            return
        state.update((result.state,))
        rows = [_dead_row(LATE, events[i], [(LATE_FIELD, reason)], topic) for i, reason in result.late]
        if result.visible is not None:
            payload = json.dumps([result.visible, result.accepted_ms], separators=(",", ":")).encode()
            rows.append((RECORD, driver_id.encode(), payload))
        if result.duplicates:
            rows.append((DUPLICATE, None, str(result.duplicates).encode()))
        if rows:
            yield _rows(rows)

    return update
