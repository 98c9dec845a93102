"""A driver's stream state, kept in its own store record: what folding its next events needs.

The record is the driver's state (no Spark state): its fold bins are the visible features, and its `_stream` bin
(`STREAM_STATE_BIN`, compact JSON) holds what continuing the fold needs: the source offsets applied, the events
still within the allowed lateness (pending) with the fold before them (committed), and the recent committed
events for duplicate detection. `advance` folds one micro-batch's events of the driver onto the record it read.

Lateness is judged per driver (docs/spec.md §3.1). A driver's events become final once they are more than the
allowed lateness (`lateness_ms`) older in event time than the driver's latest applied event; until then they are
pending. An event that sorts after the driver's last final event is folded in its place in the fold order
(`features.fold.fold_before`), however late it arrives. One that sorts at or before it can no longer be folded in
order: it is LATE, goes to the DLQ with reason `ts: late event, ...` and changes nothing. Other drivers' events and
the job's clock play no part, so one device whose clock is years ahead delays nobody else's events.

Duplicates (`features.fold.fold_order`: equal to an applied event on the fold fields). A duplicate of a pending or
of a remembered final event is counted, never applied and never dead-lettered. A record remembers its final events
within `DUPLICATE_HORIZON_MS` of event time before its last final one, at most `DUPLICATE_MEMORY` of them (as a
CRC-32 of their fields, next to their time); a duplicate of one it has forgotten sorts at or before the final state,
so it is late: dead-lettered, and it changes nothing either way.

Replays. The record keeps, per Kafka partition of its source topic, the highest offset it has taken in. An event at
or below it is one a replayed micro-batch (a restart, a retried or speculative task) brings again: skipped as
`replayed`, neither counted as a duplicate nor dead-lettered again.

A record without `_stream` (written by the backfill, or by a version that kept the state in Spark) is taken as
final up to its `_event_ms`: events it covers are duplicates, so the stream continues a backfill, and an upgrade
from the Spark-state version replays its last batch without applying anything twice.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from features.fold import DriverState, EventTuple, fold_before, fold_order
from schemas.features import STREAM_STATE_BIN
from schemas.messages import EVENT_TYPES
from schemas.timestamps import iso_ms
from streaming.parse import KafkaEvent

LATE_FIELD = "ts"
DUPLICATE_HORIZON_MS = 60 * 60_000  # final events are remembered this far back in event time...
DUPLICATE_MEMORY = 64  # ... and at most this many per driver
AFTER_ANY_ID = "\uffff"  # with a record's `_event_ms`: every event at that time counts as applied
FORMAT = 1  # the `_stream` layout below
_TYPE_CODES = {event_type: code for code, event_type in enumerate(EVENT_TYPES)}


def source_tag(topic: str) -> int:
    """The tag of a source topic in `_stream`: offsets of another topic mean nothing to this one."""
    return zlib.crc32(topic.encode("utf-8", "surrogatepass"))


def digest(event: EventTuple) -> int:
    """A final event's fingerprint beside its time: CRC-32 of its id, type and rating."""
    return zlib.crc32(f"{event[1]}\x1f{event[2]}\x1f{event[3]}".encode("utf-8", "surrogatepass"))


@dataclass(slots=True)
class StreamState:
    """The `_stream` bin, decoded."""

    source: int  # `source_tag` of the topic the offsets are of
    offsets: dict[int, int]  # the highest offset taken in, per partition
    last: EventTuple | None  # the last final event; None: final up to the committed fold's `_event_ms`
    recent: list[int]  # remembered final events, flat: [ts_ms, digest, ts_ms, digest, ...]
    pending: list[EventTuple]  # events within the allowed lateness, in the fold order
    committed: list[Any] | None  # `DriverState.dump()` of the fold before `pending`; None when nothing is pending

    def encode(self) -> bytes:
        """The bin's bytes: `[format, source, offsets, last, recent, pending, committed]` as JSON, events as
        `[ts_ms, event_id, type code, rating]`."""
        return orjson.dumps([FORMAT, self.source, [x for item in self.offsets.items() for x in item],
                             _pack(self.last), self.recent, [_pack(e) for e in self.pending], self.committed])

    @classmethod
    def decode(cls, blob: bytes) -> StreamState:
        """The state `encode` wrote; ValueError for another format."""
        fmt, source, offsets, last, recent, pending, committed = orjson.loads(blob)
        if fmt != FORMAT:
            raise ValueError(f"{STREAM_STATE_BIN} format {fmt!r}, this version reads {FORMAT}")
        return cls(source, dict(zip(offsets[::2], offsets[1::2], strict=True)), _unpack(last), recent,
                   [_unpack(e) for e in pending], committed)


def _pack(event: EventTuple | None) -> list[Any] | None:
    return None if event is None else [event[0], event[1], _TYPE_CODES[event[2]], event[3]]


def _unpack(packed: list[Any] | None) -> EventTuple | None:
    return None if packed is None else (packed[0], packed[1], EVENT_TYPES[packed[2]], packed[3])


@dataclass(slots=True)
class Advance:
    """What one micro-batch did to one driver's record."""

    record: dict[str, Any] | None = None  # the record to write, None when nothing was applied
    applied_ms: list[int] = field(default_factory=list)  # event times of the applied events
    late: list[tuple[int, str]] = field(default_factory=list)  # (position in the batch's events, reason)
    duplicates: int = 0
    replayed: int = 0  # events the record had already taken in (by source offset)


def late_reason(event_ms: int, final_ms: int, latest_ms: int, lateness_ms: int) -> str:
    """The DLQ reason of a late event (its field is `ts`)."""
    return (f"late event, older than the driver's allowed lateness (event time {iso_ms(event_ms)}; the driver's "
            f"events are final up to {iso_ms(final_ms)}, its latest is {iso_ms(latest_ms)}, lateness "
            f"{lateness_ms / 1000:g} s)")


def _final_count(pending: list[EventTuple], lateness_ms: int) -> int:
    """How many of `pending` (in the fold order) are beyond the allowed lateness behind the latest of them."""
    boundary = pending[-1][0] - lateness_ms
    ready = 0
    while ready < len(pending) and pending[ready][0] <= boundary:
        ready += 1
    return ready


def _remember(final: list[EventTuple], recent: list[int], final_ms: int) -> None:
    """Add newly final events to `recent` and forget those beyond the memory bounds (`DUPLICATE_*`)."""
    for event in final:
        recent += (event[0], digest(event))
    forget = max(0, len(recent) // 2 - DUPLICATE_MEMORY)
    horizon = final_ms - DUPLICATE_HORIZON_MS
    while forget < len(recent) // 2 and recent[2 * forget] < horizon:
        forget += 1
    del recent[: 2 * forget]


def advance(record: Mapping[str, Any] | None, events: Sequence[KafkaEvent], lateness_ms: int,
            source: int) -> Advance:
    """Fold a micro-batch's events of one driver (any order, all valid) onto the record read for it."""
    result = Advance()
    blob = None if record is None else record.get(STREAM_STATE_BIN)
    state = None if blob is None else StreamState.decode(blob)
    offsets = dict(state.offsets) if state is not None and state.source == source else {}
    fresh: list[tuple[int, EventTuple]] = []
    for position, event in enumerate(events):
        if event.offset <= offsets.get(event.partition, -1):
            result.replayed += 1
        else:
            fresh.append((position, event.fold))
    if not fresh:
        return result
    for event in events:
        offsets[event.partition] = max(event.offset, offsets.get(event.partition, -1))

    seeded = record is not None and state is None  # final up to its `_event_ms`: what it covers is a duplicate
    pending, last, recent = ([], None, []) if state is None else (state.pending, state.last, state.recent)
    if last is not None:  # the time the driver's events are final up to
        final_ms = last[0]
    elif pending:
        final_ms = DriverState.dumped_event_ms(state.committed)
    else:
        final_ms = -1 if record is None else int(record.get("_event_ms", -1))
    bound = last if last is not None else (final_ms, AFTER_ANY_ID)
    known = set(pending)
    remembered = set(zip(recent[::2], recent[1::2], strict=True))
    accepted: list[EventTuple] = []
    for position, event in fresh:
        if event in known or event == last or (event[0], digest(event)) in remembered:
            result.duplicates += 1
        elif not fold_before(bound, event):
            if seeded:
                result.duplicates += 1
            else:
                latest = pending[-1][0] if pending else final_ms
                result.late.append((position, late_reason(event[0], final_ms, latest, lateness_ms)))
        else:
            known.add(event)
            accepted.append(event)
    if not accepted:
        return result

    accepted = fold_order(accepted)
    in_order = not pending or fold_before(pending[-1], accepted[0])
    merged = pending + accepted if in_order else fold_order(pending + accepted)
    ready = _final_count(merged, lateness_ms)
    if in_order and ready >= len(pending):  # the earlier pending events are all final now: continue the record
        committed = DriverState() if record is None else DriverState.from_bins(record)
        committed.apply_all(merged[len(pending) : ready])
        visible = committed.copy().apply_all(merged[ready:]) if ready < len(merged) else committed
    else:
        committed = DriverState.load(state.committed)  # there were pending events
        if in_order:  # continue the visible fold
            visible = DriverState.from_bins(record).apply_all(accepted)
        else:  # out of order within the lateness: refold pending from the committed fold
            visible = committed.copy().apply_all(merged)
        committed.apply_all(merged[:ready])
    if ready:
        _remember(merged[:ready], recent, committed.event_ms)
        last = merged[ready - 1]
    pending = merged[ready:]
    new_state = StreamState(source, offsets, last, recent, pending, committed.dump() if pending else None)
    result.record = {**visible.to_bins(), STREAM_STATE_BIN: new_state.encode()}
    result.applied_ms = [event[0] for event in accepted]
    return result
