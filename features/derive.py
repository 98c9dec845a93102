"""SPEC §3.2: the 12 model features from a stored record and a request, for training and serving alike."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from features.fold import DAY_MS
from schemas.features import MODEL_FEATURES, SERVED_BINS

HOUR_MS = 3_600_000
PEAK_HOURS = frozenset({7, 8, 9, 16, 17, 18})
NAN = math.nan
STORE_FEATURE_COUNT = 7

def is_peak_hour(at_ms: int) -> float:
    """1.0 when the UTC hour of `at_ms` is in 07–09 or 16–18, else 0.0."""
    return 1.0 if (at_ms // HOUR_MS) % 24 in PEAK_HOURS else 0.0

def store_features(bins: Mapping[str, Any], at_ms: int) -> list[float]:
    """The 7 store-derived features, finished at time `at_ms`; NaN where a bin is absent."""
    get = bins.get  # bound once: this runs per scored candidate and per training example
    day, trips_day, shift_start = get("da_day"), get("da_trips_day"), get("da_shift_start")
    if day is None or trips_day is None:
        trips_today = NAN
    else:
        trips_today = float(trips_day) if int(day) == at_ms // DAY_MS else 0.0
    if shift_start is None:
        hours_on_shift = NAN
    else:
        hours_on_shift = max(0.0, (at_ms - int(shift_start)) / HOUR_MS) if shift_start > 0 else 0.0
    decline, rating, consecutive = get("ds_decl_rate"), get("ds_avg_rating"), get("da_consec_trips")
    accept, total = get("da_accept_1h"), get("ds_total_trips")
    return [  # the bins copied as is, NaN when absent
        NAN if decline is None else float(decline),
        NAN if rating is None else float(rating),
        trips_today,
        hours_on_shift,
        NAN if consecutive is None else float(consecutive),
        NAN if accept is None else float(accept),
        NAN if total is None else float(total),
    ]

def request_context(at_ms: int, rider_rating: float, surge_multiplier: float, est_duration_min: float) -> list[float]:
    """The request-derived features every candidate of a request shares: all 5 but `pickup_eta_min`, in order."""
    return [float(rider_rating), float(surge_multiplier), float(est_duration_min), is_peak_hour(at_ms)]

def model_features(
    bins: Mapping[str, Any] | None,
    at_ms: int,
    pickup_eta_min: float,
    rider_rating: float,
    surge_multiplier: float,
    est_duration_min: float,
) -> list[float]:
    """All 12 features in `MODEL_FEATURES` order; a missing record gives NaN store features."""
    return candidate_features(bins, at_ms, pickup_eta_min,
                              request_context(at_ms, rider_rating, surge_multiplier, est_duration_min))

def candidate_features(bins: Mapping[str, Any] | None, at_ms: int, pickup_eta_min: float,
                       context: list[float]) -> list[float]:
    """`model_features` of one candidate of a request whose `request_context` is derived once for all of them."""
    stored = store_features(bins, at_ms) if bins is not None else [NAN] * STORE_FEATURE_COUNT
    return [*stored, float(pickup_eta_min), *context]

def record_status(bins: Mapping[str, Any] | None, at_ms: int, max_age_ms: float) -> str:
    """`missing` (no record), `stale` (older than max_age_ms), `partial` (a served bin absent) or `present`."""
    if not bins or (event_ms := bins.get("_event_ms")) is None:
        return "missing"
    if at_ms - int(event_ms) > max_age_ms:
        return "stale"
    return "partial" if None in map(bins.get, SERVED_BINS) else "present"  # runs per candidate: a C-level scan

assert len(MODEL_FEATURES) == STORE_FEATURE_COUNT + 5
