"""Per-driver streaming state: the fold committed up to the watermark, plus the pending events after it.

Late-event policy. Each driver keeps `committed`, the fold (`features.fold.DriverState`) of its events at or
before the event-time watermark, and `pending`, its newer events sorted in `order_key` order and deduplicated by
event id. The visible record is committed + pending, written every micro-batch, so the watermark delays nothing.
A new event that sorts after the committed state's last event joins pending, even when it arrives out of order
(it is folded in its place). One the committed state already covers can no longer be folded in order: it is
LATE, goes to the DLQ with reason `ts: late event, older than the watermark (...)` and never changes features.
On a driver's first sight (no Spark state) the committed state starts from its online-store record, so streaming
continues a backfill; events that record already covers are duplicates: dropped and counted, not dead-lettered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from features.fold import DriverState, EventTuple, order_key

LATE_FIELD = "ts"


@dataclass(slots=True)
class Advance:
    """What one micro-batch did to one driver."""

    state: str  # the new Spark state (JSON)
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


def _state(bins: Mapping[str, Any] | None, last_id: str) -> DriverState:
    return DriverState.from_bins(bins, last_id) if bins is not None else DriverState()


def _promote(committed: DriverState, pending: list[EventTuple], watermark_ms: int) -> list[EventTuple]:
    """Fold the pending events at or before the watermark into `committed`; returns the rest."""
    ready = 0
    while ready < len(pending) and pending[ready][0] <= watermark_ms:
        ready += 1
    committed.apply_all(pending[:ready])
    return pending[ready:]


def advance(saved: str | None, events: Sequence[EventTuple], watermark_ms: int,
            seed: Mapping[str, Any] | None = None) -> Advance:
    """Apply a micro-batch's events (any order) to a driver's saved state; `seed` is its store record on first sight."""
    if saved is not None:
        doc = json.loads(saved)
        committed_bins, committed_id = doc["c"], doc["i"]
        pending: list[EventTuple] = [tuple(e) for e in doc["p"]]
        visible_bins = doc.get("v", committed_bins)
    else:
        committed_bins, committed_id, pending = seed, "\uffff" if seed else "", []
        visible_bins = committed_bins
    committed = _state(committed_bins, committed_id)
    pending = _promote(committed, pending, watermark_ms)  # first, so lateness is judged against the watermark
    seen = {e[1] for e in pending}
    result = Advance(state="", visible=None)
    accepted: list[EventTuple] = []
    for position, event in enumerate(events):
        if event[1] in seen or (event[0], event[1]) == (committed.event_ms, committed.last_id):
            result.duplicates += 1
        elif committed.covers(event):
            if saved is None:
                result.duplicates += 1
            else:
                result.late.append((position, late_reason(event[0], committed.event_ms, watermark_ms)))
        else:
            seen.add(event[1])
            accepted.append(event)
    accepted.sort(key=order_key)
    if accepted:
        tail = pending[-1] if pending else (committed.event_ms, committed.last_id)
        if order_key(accepted[0]) > order_key(tail):  # in order: continue the visible fold
            visible = _state(visible_bins, tail[1]).apply_all(accepted)
            pending += accepted
        else:  # out of order within the watermark: refold pending from the committed state
            pending = sorted(pending + accepted, key=order_key)
            visible = _state(committed.to_bins(), committed.last_id).apply_all(pending)
        visible_bins = result.visible = visible.to_bins()
        result.accepted_ms = [e[0] for e in accepted]
    pending = _promote(committed, pending, watermark_ms)
    doc = {"c": committed.to_bins() if committed.event_ms >= 0 else None, "i": committed.last_id, "p": pending}
    if pending:
        doc["v"] = visible_bins
    result.state = json.dumps(doc, separators=(",", ":"))
    return result
