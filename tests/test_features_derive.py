"""The model-feature rules of `features.derive`: one record (training's per-offer path) and a column of records
(the scorer's batch) give the same features and statuses, and the rules mean what docs/spec.md §3.2 says."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from properties import examples

from features.derive import (
    HOUR_MS,
    STORED_COLUMNS,
    model_feature_columns,
    model_features,
    record_status,
    status_codes,
)
from features.fold import DAY_MS
from featurestore.base import BadInput, records_matrix
from schemas.messages import FEATURE_STATUSES

AT_MS = 20_000 * DAY_MS + 8 * HOUR_MS  # 08:00 UTC, a peak hour
MAX_AGE_MS = 86_400_000.0

bin_values = {
    "da_day": st.sampled_from([20_000, 19_999, 20_001]),
    "da_shift_start": st.one_of(st.sampled_from([0, -1]), st.integers(AT_MS - 2 * DAY_MS, AT_MS + HOUR_MS)),
    "_event_ms": st.integers(AT_MS - 3 * DAY_MS, AT_MS + HOUR_MS),
}
numbers = st.one_of(st.integers(0, 10_000), st.floats(0, 5, allow_nan=False))
record_bins = st.fixed_dictionaries({}, optional={name: bin_values.get(name, numbers) for name in STORED_COLUMNS})
records = st.one_of(st.none(), record_bins)
not_numbers = st.sampled_from([[0], [0.5], "0.5", "inf", True, b"1", math.inf, -math.inf, 2**1100, {"n": 1}])
"""Values the store never writes in a numeric bin, each of which Python or numpy would turn into a number."""


def _same(left: list[float], right: list[float]) -> bool:
    return all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(left, right, strict=True))


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(records, min_size=1, max_size=20), st.integers(AT_MS - DAY_MS, AT_MS + DAY_MS),
       st.floats(0, 60), st.floats(1, 5), st.floats(1, 4), st.floats(1, 120))
@example([{"da_trips_day": 3}], AT_MS, 1.0, 4.5, 1.0, 10.0)  # trips without a day: absent, not zero
@example([{"da_day": 20_000, "da_trips_day": 0, "da_shift_start": AT_MS + 1}], AT_MS, 1.0, 4.5, 1.0, 10.0)
def test_one_record_and_a_column_of_records_derive_alike(bins: list[dict[str, Any] | None], at_ms: int,
                                                          eta: float, rider: float, surge: float,
                                                          duration: float) -> None:
    stored = records_matrix(bins, STORED_COLUMNS, 0).values
    columns = model_feature_columns(stored, at_ms, np.full(len(bins), eta), rider, surge, duration)
    codes = status_codes(stored, at_ms, MAX_AGE_MS)
    for record, row, code in zip(bins, columns, codes, strict=True):
        assert _same(model_features(record, at_ms, eta, rider, surge, duration), row.tolist())
        assert record_status(record, at_ms, MAX_AGE_MS) == FEATURE_STATUSES[code]


@settings(max_examples=examples(200), deadline=None)
@given(record_bins, st.sampled_from(STORED_COLUMNS), not_numbers)
@example({}, "ds_decl_rate", [0])  # a one-element list read as its number (issue 29)
@example({}, "_event_ms", "1717401600000")
def test_a_bin_holding_no_number_makes_the_record_unreadable_on_both_paths(bins: dict[str, Any], name: str,
                                                                           value: Any) -> None:
    record = {**bins, name: value}
    assert records_matrix([record, None, bins], STORED_COLUMNS, 0).unreadable == (0,)
    with pytest.raises(BadInput, match=f"bin '{name}': .* is not a finite number"):
        if name == "_event_ms":
            record_status(record, AT_MS, MAX_AGE_MS)
        else:
            model_features(record, AT_MS, 1.0, 4.5, 1.0, 10.0)


def test_the_rules_read_the_record_as_spec_says() -> None:
    record = {"ds_decl_rate": 0.25, "ds_avg_rating": 4.5, "ds_total_trips": 40, "da_trips_day": 3,
              "da_day": AT_MS // DAY_MS, "da_shift_start": AT_MS - 2 * HOUR_MS, "da_consec_trips": 2,
              "da_accept_1h": 0.5, "_event_ms": AT_MS - 60_000}
    features = model_features(record, AT_MS, 4.0, 4.8, 1.5, 20.0)
    assert features == [0.25, 4.5, 3.0, 2.0, 2.0, 0.5, 40.0, 4.0, 4.8, 1.5, 20.0, 1.0]
    yesterday = {**record, "da_day": AT_MS // DAY_MS - 1}
    assert model_features(yesterday, AT_MS, 4.0, 4.8, 1.5, 20.0)[2] == 0.0  # trips of another day count as none
    off_shift = {**record, "da_shift_start": 0}
    assert model_features(off_shift, AT_MS, 4.0, 4.8, 1.5, 20.0)[3] == 0.0
    assert all(math.isnan(v) for v in model_features(None, AT_MS, 4.0, 4.8, 1.5, 20.0)[:7])
    assert record_status(record, AT_MS, MAX_AGE_MS) == "present"
    assert record_status({**record, "_event_ms": AT_MS - 2 * DAY_MS}, AT_MS, MAX_AGE_MS) == "stale"
    assert record_status({k: v for k, v in record.items() if k != "ds_avg_rating"}, AT_MS, MAX_AGE_MS) == "partial"
    assert record_status({k: v for k, v in record.items() if k != "_event_ms"}, AT_MS, MAX_AGE_MS) == "missing"
    assert record_status(None, AT_MS, MAX_AGE_MS) == "missing"
