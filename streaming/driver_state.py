"""Per-driver streaming state: the fold committed up to the watermark, the pending events after it, and the
latest committed events.

Late-event policy. Each driver keeps `committed`, the fold (`features.fold.DriverState`) of its events at or
before the event-time watermark, and `pending`, its newer events in the fold order (`features.fold.fold_key`).
The visible record is committed + pending, written every micro-batch, so the watermark delays nothing.
A new event that sorts after the committed state's last event joins pending, even when it arrives out of order
(it is folded in its place). One that sorts at or before it can no longer be folded in order: it is LATE, goes
to the DLQ with reason `ts: late event, older than the watermark (...)` and never changes features.

Duplicates (`features.fold.fold_order`: an event equal to an applied one on the fold fields). A duplicate of a
pending or a remembered committed event is counted, never applied and never dead-lettered, however old. A
driver remembers its committed events within `DUPLICATE_HORIZON_MS` of event time before its latest committed
one, at most `DUPLICATE_MEMORY` of them. A duplicate of an event it has forgotten sorts at or before the
committed state, so it is late: dead-lettered, and it still changes nothing. The bound costs only that label.

On a driver's first sight (no Spark state) the committed state starts from its online-store record, so streaming
continues a backfill; events that record already covers are duplicates: dropped and counted, not dead-lettered.

Idle drivers (`evictable`). Once a driver's latest event is `idle_ms` behind the watermark, it has nothing pending
and its store record is its whole fold: its state may be dropped, and its next event starts from that record as on
first sight. The cost is the label of an event that old at or before the record's latest event: a duplicate, not
late.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from features.fold import DriverState, EventTuple, fold_before, fold_order

LATE_FIELD = "ts"
DUPLICATE_HORIZON_MS = 60 * 60_000  # committed events are remembered this far back in event time...
DUPLICATE_MEMORY = 64  # ... and at most this many per driver
AFTER_ANY_ID = "\uffff"  # with a store record's `_event_ms`: every event at that time counts as applied


@dataclass(slots=True)
class Advance:
    """What one micro-batch did to one driver."""

    state: bytes  # the driver's new saved state (`dump_state`)
    latest_ms: int  # the event time of its latest applied event, pending or committed (-1 before any)
    visible: dict[str, Any] | None  # the record to write, None when no event was accepted
    accepted_ms: list[int] = field(default_factory=list)  # event times of the accepted events
    late: list[tuple[int, str]] = field(default_factory=list)  # (input position, reason) of late events
    duplicates: int = 0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def late_reason(event_ms: int, committed_ms: int, watermark_ms: int) -> str:
    """The DLQ reason of a late event (its field is `ts`)."""
    return (f"late event, older than the watermark (event time {_iso(event_ms)}; driver committed up to "
            f"{_iso(committed_ms)}, watermark {_iso(watermark_ms)})")


def _state(bins: Mapping[str, Any] | None) -> DriverState:
    return DriverState.from_bins(bins) if bins is not None else DriverState()


def _promote(committed: DriverState, pending: list[EventTuple], watermark_ms: int,
             remembered: list[EventTuple]) -> list[EventTuple]:
    """Fold the pending events at or before the watermark into `committed` and remember them (within the
    memory bound); returns the rest."""
    ready = 0
    while ready < len(pending) and pending[ready][0] <= watermark_ms:
        ready += 1
    committed.apply_all(pending[:ready])
    remembered += pending[:ready]
    forget = max(0, len(remembered) - DUPLICATE_MEMORY)
    while forget < len(remembered) and remembered[forget][0] < committed.event_ms - DUPLICATE_HORIZON_MS:
        forget += 1
    del remembered[:forget]
    return pending[ready:]


def evictable(latest_ms: int, watermark_ms: int, idle_ms: int) -> bool:
    """Whether a driver whose latest event is at `latest_ms` may have its state dropped (the module's docstring)."""
    return latest_ms + idle_ms <= watermark_ms


def latest_event_ms(doc: Mapping[str, Any]) -> int:
    """The event time of a driver's latest applied event in its saved document (`advance`), -1 before any."""
    pending, committed = doc["p"], doc["c"]
    return pending[-1][0] if pending else -1 if committed is None else int(committed.get("_event_ms", -1))


def load_state(saved: bytes) -> dict[str, Any]:
    """A driver's saved document (`advance`); the inverse of `dump_state`."""
    return pickle.loads(saved)


def dump_state(doc: dict[str, Any]) -> bytes:
    """A driver's document saved: a pickle (a format every later Python reads; the state outlives the job's Python),
    at a third of JSON's cost for these lists of tuples."""
    return pickle.dumps(doc, protocol=5)


def advance(saved: bytes | None, events: Sequence[EventTuple], watermark_ms: int,
            seed: Mapping[str, Any] | None = None) -> Advance:
    """Apply a micro-batch's events (any order) to a driver's saved state; `seed` is its store record on first sight."""
    if saved is not None:
        doc = load_state(saved)
        committed_bins = doc["c"]
        pending: list[EventTuple] = doc["p"]
        remembered: list[EventTuple] = doc["d"]
        visible_bins = doc.get("v", committed_bins)
    else:
        committed_bins, pending, remembered, visible_bins = seed, [], [], seed
    committed = _state(committed_bins)
    pending = _promote(committed, pending, watermark_ms, remembered)  # first: lateness is judged at the watermark
    # the committed state's latest event: the last one remembered (never forgotten), else a store record's time
    last = remembered[-1] if remembered else (committed.event_ms, AFTER_ANY_ID)
    known = {*pending, *remembered}
    result = Advance(state=b"", latest_ms=-1, visible=None)
    accepted: list[EventTuple] = []
    for position, event in enumerate(events):
        if event in known:
            result.duplicates += 1
        elif not fold_before(last, event):
            if saved is None:
                result.duplicates += 1
            else:
                result.late.append((position, late_reason(event[0], committed.event_ms, watermark_ms)))
        else:
            known.add(event)
            accepted.append(event)
    if accepted:
        accepted = fold_order(accepted)
        if not pending or fold_before(pending[-1], accepted[0]):  # in order: continue the visible fold
            visible = _state(visible_bins).apply_all(accepted)
            pending += accepted
        else:  # out of order within the watermark: refold pending from the committed state
            pending = fold_order(pending + accepted)
            visible = _state(committed.to_bins()).apply_all(pending)
        visible_bins = result.visible = visible.to_bins()
        result.accepted_ms = [e[0] for e in accepted]
    pending = _promote(committed, pending, watermark_ms, remembered)
    # the committed bins (None before any), the pending events, the remembered committed ones, and the visible bins
    # when there are pending events
    doc = {"c": committed.to_bins() if committed.event_ms >= 0 else None, "p": pending, "d": remembered}
    if pending:
        doc["v"] = visible_bins
    result.state, result.latest_ms = dump_state(doc), latest_event_ms(doc)
    return result
