"""Feeding micro-batches of one driver to `streaming.driver_state.advance` as the update does, with the record kept
between batches as the store would keep it (no Spark, no store)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from features.fold import EventTuple
from schemas.features import STREAM_STATE_BIN
from streaming.driver_state import Advance, StreamState, advance, source_tag
from streaming.parse import KafkaEvent

TOPIC = source_tag("trip-events")


@dataclass
class Fed:
    """A driver's record after some batches, and what the batches did."""

    record: dict[str, Any] | None = None
    late: list[tuple[EventTuple, str]] = field(default_factory=list)
    duplicates: int = 0
    replayed: int = 0
    writes: int = 0
    offset: int = 0  # the next event's Kafka offset

    @property
    def visible(self) -> dict[str, Any] | None:
        """The record's fold bins (without the stream state)."""
        return None if self.record is None else {k: v for k, v in self.record.items() if k != STREAM_STATE_BIN}

    @property
    def state(self) -> StreamState:
        """The record's stream state."""
        return StreamState.decode(self.record[STREAM_STATE_BIN])

    def sourced(self, batch: Sequence[EventTuple]) -> list[KafkaEvent]:
        """`batch` as the next records of partition 0."""
        events = [KafkaEvent(event, 0, self.offset + i, None, b"") for i, event in enumerate(batch)]
        self.offset += len(batch)
        return events

    def apply(self, events: Sequence[KafkaEvent], lateness_ms: int) -> Advance:
        """One batch of sourced events onto the record."""
        result = advance(self.record, events, lateness_ms, TOPIC)
        self.late += [(events[position].fold, reason) for position, reason in result.late]
        self.duplicates += result.duplicates
        self.replayed += result.replayed
        if result.record is not None:
            self.record, self.writes = result.record, self.writes + 1
        return result

    def feed(self, batch: Sequence[EventTuple], lateness_ms: int) -> Advance:
        """One batch of new records onto the record."""
        return self.apply(self.sourced(batch), lateness_ms)


def fed(batches: Sequence[Sequence[EventTuple]], lateness_ms: int, record: dict[str, Any] | None = None) -> Fed:
    """`batches` fed in order onto `record` (default: none)."""
    state = Fed(record=record)
    for batch in batches:
        state.feed(batch, lateness_ms)
    return state
