"""docs/spec.md §3.2: the 12 model features from a stored record and a request, for training and serving alike.

Each rule is written once over values that are either numbers (one record: the fold's per-offer path) or numpy
columns (the scorer's batch of candidates); `_Ops` holds the two operations whose spelling differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from features.fold import DAY_MS
from featurestore.base import record_floats
from schemas.features import MODEL_FEATURES, SERVED_BINS
from schemas.messages import FEATURE_STATUSES

HOUR_MS = 3_600_000
PEAK_HOURS = frozenset({7, 8, 9, 16, 17, 18})
PEAK_BY_HOUR = np.array([1.0 if hour in PEAK_HOURS else 0.0 for hour in range(24)])
NAN = math.nan
STORE_FEATURE_COUNT = 7
STORED_COLUMNS = (*SERVED_BINS, "_event_ms")
"""The record columns the rules read, in this order: the served bins, then the latest event time."""
_ARGUMENTS = ("ds_decl_rate", "ds_avg_rating", "da_day", "da_trips_day", "da_shift_start", "da_consec_trips",
              "da_accept_1h", "ds_total_trips")
_ARGUMENT_COLUMNS = np.array([STORED_COLUMNS.index(name) for name in _ARGUMENTS], dtype=np.intp)
"""An index array: numpy converts an index list on every use (3 µs of each scored request)."""
EVENT_COLUMN = STORED_COLUMNS.index("_event_ms")
PRESENT, PARTIAL, STALE, MISSING = range(4)
"""Record status codes: positions in `FEATURE_STATUSES`."""
Value = Any  # a float, or a numpy column of them


class _Ops(NamedTuple):
    isnan: Callable[[Value], Value]
    maximum: Callable[[Value, Value], Value]


_NUMBERS = _Ops(math.isnan, max)
_COLUMNS = _Ops(np.isnan, np.maximum)


def _store_features(decline: Value, rating: Value, day: Value, trips_day: Value, shift_start: Value,
                    consecutive: Value, accept: Value, total: Value, at_ms: Value, ops: _Ops) -> tuple[Value, ...]:
    """The rule of the 7 store-derived features, finished at `at_ms`. An absent (NaN) input gives an absent
    feature: a product with a boolean keeps or zeroes a value, and `x * 0.0` adds x's NaN and nothing else."""
    trips_today = trips_day * (day == at_ms // DAY_MS) + day * 0.0  # trips of another day count as none
    hours_on_shift = ops.maximum(0.0, (at_ms - shift_start) / HOUR_MS) * (shift_start > 0) + shift_start * 0.0
    return decline, rating, trips_today, hours_on_shift, consecutive, accept, total


def _status(event_ms: Value, any_absent: Value, at_ms: int, max_age_ms: float, ops: _Ops) -> Value:
    """The rule of a record's status code: the worst of no event time, too old and a served bin absent."""
    return ops.maximum(ops.maximum(ops.isnan(event_ms) * MISSING, (at_ms - event_ms > max_age_ms) * STALE),
                       any_absent * PARTIAL)


def is_peak_hour(at_ms: Value) -> Value:
    """1.0 when the UTC hour of `at_ms` is in 07–09 or 16–18, else 0.0 (a numpy float, or a column)."""
    return PEAK_BY_HOUR[at_ms // HOUR_MS % 24]


def status_codes(stored: np.ndarray, at_ms: int, max_age_ms: float) -> np.ndarray:
    """The status code of each row of `stored` (`STORED_COLUMNS`) at `at_ms`."""
    any_absent = np.isnan(stored[:, :EVENT_COLUMN]).any(axis=1)
    return _status(stored[:, EVENT_COLUMN], any_absent, at_ms, max_age_ms, _COLUMNS)


def store_features(bins: Mapping[str, Any], at_ms: int) -> list[float]:
    """The 7 store-derived features of one record at `at_ms`; NaN where a bin is absent, BadInput where a bin holds
    something else than a number (as the scorer's matrix marks that record unreadable)."""
    return list(_store_features(*record_floats(bins, _ARGUMENTS), at_ms, _NUMBERS))


def model_features(
    bins: Mapping[str, Any] | None,
    at_ms: int,
    pickup_eta_min: float,
    rider_rating: float,
    surge_multiplier: float,
    est_duration_min: float,
) -> list[float]:
    """All 12 features in `MODEL_FEATURES` order; a missing record gives NaN store features."""
    stored = store_features(bins, at_ms) if bins is not None else [NAN] * STORE_FEATURE_COUNT
    return [*stored, float(pickup_eta_min), float(rider_rating), float(surge_multiplier), float(est_duration_min),
            float(is_peak_hour(at_ms))]


def model_feature_columns(stored: np.ndarray, at_ms: Value, pickup_eta_min: Value, rider_rating: Value,
                          surge_multiplier: Value, est_duration_min: Value) -> np.ndarray:
    """`model_features` of each row of `stored` (`STORED_COLUMNS`); request values are one per row or one for
    all rows."""
    out = np.empty((len(MODEL_FEATURES), len(stored)))
    out[:STORE_FEATURE_COUNT] = _store_features(*stored.T[_ARGUMENT_COLUMNS], at_ms, _COLUMNS)
    for row, value in enumerate((pickup_eta_min, rider_rating, surge_multiplier, est_duration_min,
                                 is_peak_hour(at_ms)), start=STORE_FEATURE_COUNT):
        out[row] = value
    return out.T


def record_status(bins: Mapping[str, Any] | None, at_ms: int, max_age_ms: float) -> str:
    """`missing` (no record), `stale` (older than max_age_ms), `partial` (a served bin absent) or `present`."""
    event_ms = record_floats(bins, ("_event_ms",))[0] if bins else NAN
    any_absent = bool(bins) and None in map(bins.get, SERVED_BINS)
    return FEATURE_STATUSES[_status(event_ms, any_absent, at_ms, max_age_ms, _NUMBERS)]


assert len(MODEL_FEATURES) == STORE_FEATURE_COUNT + 5
assert FEATURE_STATUSES[PRESENT:MISSING + 1] == ("present", "partial", "stale", "missing")
