"""The one implementation of docs/spec.md §3: a fold over a driver's time-ordered events into record bins.

Streaming, backfill, dataset materialization and the consistency check all call this module, so online
and offline features agree by construction (the Chronon model).

Order and duplicates (docs/spec.md §3). A driver's events are folded in `fold_key` order: event time, event id, then
the other fold fields, so the order is total and never depends on arrival or file order. An exact duplicate is
an event equal to another on everything the fold reads (`ts`, `event_id`, `event_type`, `rating`: a producer's
retry, a redelivery, a replay): it is applied once. Two events that share an `event_id` but differ in one of
those are two events (the producer reused the id) and both are applied: a path cannot retract an applied event
(streaming commits it; the store's newer-wins version, `_event_ms` then `_n_events`, would not even take the
corrected record), so treating them as one would make streaming depend on arrival order. `fold_order` is the
rule; every path calls it or, in streaming, keeps to it event by event (`fold_before`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from featurestore.base import BadInput, stored_float, stored_int

DAY_MS = 86_400_000
GAP_MS = 30 * 60_000  # a gap this long between a driver's events resets the consecutive-trip streak
WINDOW_MS = 60 * 60_000  # da_accept_1h looks at responses in the 60 min up to the latest event

EventTuple = tuple[int, str, str, float | None]
"""(ts_ms, event_id, event_type, rating): what the fold needs of a TripEvent."""
FOLD_FIELDS = 4
Event = TypeVar("Event", bound=tuple)
"""A fold tuple, or a longer tuple that starts like one (the point-in-time fold's)."""


def order_key(event: Sequence[Any]) -> tuple[int, str]:
    """The order of a driver's events by event time, then event id; `fold_key` breaks its rare ties."""
    return event[0], event[1]


def _field_rank(value: Any) -> tuple[int, Any]:
    """A total order over one field's values: None first, NaN last."""
    if value is None:
        return 0, 0
    if value != value:
        return 2, 0
    return 1, value


def fold_key(event: Sequence[Any]) -> tuple[Any, ...]:
    """The fold order: `order_key`, then the event's other fields (ties of time and id are rare)."""
    return (event[0], event[1], *map(_field_rank, event[2:]))


def fold_before(first: Sequence[Any], second: Sequence[Any]) -> bool:
    """Whether `first` comes strictly before `second` in the fold order (`fold_key`)."""
    if first[0] != second[0] or first[1] != second[1]:
        return (first[0], first[1]) < (second[0], second[1])
    return fold_key(first) < fold_key(second)


def fold_order(events: Iterable[Event]) -> list[Event]:
    """`events` in the fold order, each exact duplicate once: of events equal on the fold fields (the first
    `FOLD_FIELDS`), the first in `fold_key` order is kept."""
    ordered = sorted(events, key=order_key)
    kept: list[Event] = []
    start, count = 0, len(ordered)
    while start < count:
        ts, event_id = ordered[start][0], ordered[start][1]
        end = start + 1
        while end < count and ordered[end][1] == event_id and ordered[end][0] == ts:
            end += 1
        if end == start + 1:
            kept.append(ordered[start])
        else:  # one time and id: copies of one event, or events that reuse an id
            run = sorted(ordered[start:end], key=fold_key)
            kept += [e for i, e in enumerate(run) if i == 0 or e[:FOLD_FIELDS] != run[i - 1][:FOLD_FIELDS]]
        start = end
    return kept


class DriverState:
    """Running state of one driver; `to_bins()` gives the stored record."""

    __slots__ = (
        "n_accept", "n_decline", "n_rated", "rating_sum", "total_trips", "day", "trips_day",
        "shift_start", "consec", "responses", "event_ms", "n_events",
    )

    def __init__(self) -> None:
        self.n_accept = 0
        self.n_decline = 0
        self.n_rated = 0
        self.rating_sum = 0.0
        self.total_trips = 0
        self.day = -1
        self.trips_day = 0
        self.shift_start = 0
        self.consec = 0
        self.responses: list[tuple[int, int]] = []  # (ts_ms, accepted) within WINDOW_MS of event_ms
        self.event_ms = -1
        self.n_events = 0

    def apply(self, ts_ms: int, event_id: str, event_type: str, rating: float | None) -> None:
        """Apply one event; callers feed events in the fold order (`fold_order`)."""
        if self.event_ms >= 0 and ts_ms - self.event_ms >= GAP_MS:
            self.consec = 0
        day = ts_ms // DAY_MS
        if day != self.day:
            self.day = day
            self.trips_day = 0
        if event_type == "trip_completed":
            self.total_trips += 1
            self.trips_day += 1
            self.consec += 1
        elif event_type == "offer_accepted":
            self.n_accept += 1
            self.responses.append((ts_ms, 1))
        elif event_type == "offer_declined":
            self.n_decline += 1
            self.responses.append((ts_ms, 0))
        elif event_type == "trip_rated" and rating is not None:
            self.n_rated += 1
            self.rating_sum += rating
        elif event_type == "shift_started":
            self.shift_start = ts_ms
            self.consec = 0
        elif event_type == "shift_ended":
            self.shift_start = 0
        horizon = ts_ms - WINDOW_MS
        if self.responses and self.responses[0][0] <= horizon:
            self.responses = [r for r in self.responses if r[0] > horizon]
        self.event_ms = ts_ms
        self.n_events += 1

    def apply_all(self, events: Iterable[EventTuple]) -> DriverState:
        """Apply events already in the fold order; returns self."""
        for ts_ms, event_id, event_type, rating in events:
            self.apply(ts_ms, event_id, event_type, rating)
        return self

    def to_bins(self) -> dict[str, Any]:
        """The stored record (docs/spec.md §3): absent features are left out; `_updated_ms` is the store's."""
        bins: dict[str, Any] = {
            "ds_total_trips": self.total_trips,
            "ds_n_accept": self.n_accept,
            "ds_n_decline": self.n_decline,
            "ds_n_rated": self.n_rated,
            "ds_rating_sum": self.rating_sum,
            "da_trips_day": self.trips_day,
            "da_day": self.day,
            "da_shift_start": self.shift_start,
            "da_consec_trips": self.consec,
            "da_resp_1h": [x for response in self.responses for x in response],
            "_event_ms": self.event_ms,
            "_n_events": self.n_events,
        }
        responses = self.n_accept + self.n_decline
        if responses:
            bins["ds_decl_rate"] = self.n_decline / responses
        if self.n_rated:
            bins["ds_avg_rating"] = self.rating_sum / self.n_rated
        if self.responses:
            bins["da_accept_1h"] = sum(accepted for _, accepted in self.responses) / len(self.responses)
        return bins

    def copy(self) -> DriverState:
        """An independent copy."""
        state = DriverState.__new__(DriverState)
        for name in self.__slots__:
            setattr(state, name, getattr(self, name))
        state.responses = list(self.responses)
        return state

    def dump(self) -> list[Any]:
        """The state as one flat list (`load` reads it back): a compact snapshot, smaller than `to_bins`."""
        return [self.n_accept, self.n_decline, self.n_rated, self.rating_sum, self.total_trips, self.day,
                self.trips_day, self.shift_start, self.consec, self.event_ms, self.n_events,
                [x for response in self.responses for x in response]]

    @staticmethod
    def dumped_event_ms(values: Sequence[Any]) -> int:
        """The event time of the latest event of a state `dump` wrote, without loading it."""
        return values[9]

    @classmethod
    def load(cls, values: Sequence[Any]) -> DriverState:
        """The state `dump` wrote."""
        state = cls.__new__(cls)
        (state.n_accept, state.n_decline, state.n_rated, state.rating_sum, state.total_trips, state.day,
         state.trips_day, state.shift_start, state.consec, state.event_ms, state.n_events, flat) = values
        state.rating_sum = float(state.rating_sum)
        state.responses = [(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]
        return state

    @classmethod
    def from_bins(cls, bins: Mapping[str, Any]) -> DriverState:
        """Resume the fold from a stored record; BadInput naming the bin when one holds a value of another kind."""

        def stored(name: str, default: Any, convert: Callable[[Any], Any] = stored_int) -> Any:
            value = bins.get(name)
            try:
                return default if value is None else convert(value)
            except ValueError as exc:
                raise BadInput(f"bin {name!r}: {exc}") from None

        state = cls()
        state.n_accept = stored("ds_n_accept", 0)
        state.n_decline = stored("ds_n_decline", 0)
        state.n_rated = stored("ds_n_rated", 0)
        state.rating_sum = stored("ds_rating_sum", 0.0, stored_float)
        state.total_trips = stored("ds_total_trips", 0)
        state.day = stored("da_day", -1)
        state.trips_day = stored("da_trips_day", 0)
        state.shift_start = stored("da_shift_start", 0)
        state.consec = stored("da_consec_trips", 0)
        flat = stored("da_resp_1h", [], _int_list)
        state.responses = [(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]
        state.event_ms = stored("_event_ms", -1)
        state.n_events = stored("_n_events", 0)
        return state


def _int_list(value: Any) -> list[int]:
    """A stored list of ints; ValueError for anything else."""
    if not isinstance(value, list):
        raise ValueError(f"{type(value).__name__} is not a list")
    return [stored_int(item) for item in value]


def fold(events: Iterable[EventTuple], state: DriverState | None = None) -> DriverState:
    """Fold events (any order, exact duplicates included) onto `state` (default: a new driver)."""
    return (state or DriverState()).apply_all(fold_order(events))
