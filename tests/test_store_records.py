"""The shared record validation: normalisation and batch preparation, independent of any backend."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from properties import examples

from featurestore.base import BadInput, feature_matrix
from featurestore.records import check_bin_names, check_record, prepare


def test_numbers_are_normalised_to_the_registry_type() -> None:
    bins = {"ds_avg_rating": 4, "ds_total_trips": np.int64(3), "da_resp_1h": [np.int64(5), 1, 2.5],
            "_event_ms": 10, "_n_events": 1, "_updated_ms": 1, "ds_decl_rate": None}
    _, out = check_record("d1", bins, stamp_ms=99)
    assert out == {"ds_avg_rating": 4.0, "ds_total_trips": 3, "da_resp_1h": [5, 1, 2.5],
                   "_event_ms": 10, "_n_events": 1, "_updated_ms": 99}  # the store stamps _updated_ms; None = absent
    assert type(out["ds_avg_rating"]) is float and type(out["ds_total_trips"]) is int
    assert [type(item) for item in out["da_resp_1h"]] == [int, int, float]


def test_prepare_validates_everything_and_keeps_the_newest_per_driver() -> None:
    older = {"_event_ms": 5, "_n_events": 9}
    newer = {"_event_ms": 6, "_n_events": 1}
    records, dropped = prepare([("a", older), ("b", older), ("a", newer), ("a", dict(newer))], stamp_ms=1)
    assert dropped == 2
    assert [(entity, bins["_event_ms"]) for entity, bins in records] == [("a", 6), ("b", 5)]
    with pytest.raises(BadInput, match="driver 'c': bin 'ds_day'"):
        prepare([("a", older), ("c", {**older, "ds_day": 1})], stamp_ms=1)


def test_bin_name_check_is_cached_and_strict() -> None:
    assert check_bin_names(["ds_total_trips", "_event_ms"]) == ("ds_total_trips", "_event_ms")
    with pytest.raises(BadInput, match="16 bytes"):
        check_bin_names(("ds_sixteen_bytes",))


cell = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.text(max_size=3),
                 st.sampled_from(["1.5", "inf", "nan"]), st.binary(max_size=2), st.lists(st.integers(), max_size=2),
                 st.lists(st.lists(st.integers(), max_size=1), max_size=1),
                 st.dictionaries(st.text(max_size=1), st.integers(), max_size=1))


def _number(value: Any) -> float | None:
    """The float a stored cell stands for (NaN when absent), or None where the store never writes such a value in a
    numeric bin: anything but an int or a float (a numeric string, a bool, a one-element list), or an infinity."""
    if value is None:
        return math.nan
    if type(value) not in (int, float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return None if math.isinf(number) else number


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.lists(cell, min_size=3, max_size=3), max_size=6))
@example([[1, None, 2.5], ["x", 1, 1], [[1], 2, 3]])
@example([[[0], [0], [0]]])  # found: one-element lists read as the numbers 0.0 (issue 29)
@example([[[[0]], [[1]], [[2]]], [1, 2, 3]])
@example([["1.5", b"1", True], [1, 2, 3]])  # numpy turns each of these into a number
@example([[math.inf, 1, 2], [2**1100, 0, 0], [math.nan, 0, 0]])
def test_feature_matrix_keeps_each_row_in_place_and_marks_the_unreadable(rows: list[list[Any]]) -> None:
    read = feature_matrix(rows, 3, 7)
    assert read.values.shape == (len(rows), 3) and read.values.dtype == np.float64 and read.now_ms == 7
    for i, row in enumerate(rows):
        numbers = [_number(value) for value in row]
        if None in numbers:
            assert i in read.unreadable and np.isnan(read.values[i]).all()
        else:
            assert i not in read.unreadable
            assert np.array_equal(read.values[i], np.array(numbers), equal_nan=True)
    assert read.rows(1, len(rows)).unreadable == tuple(i - 1 for i in read.unreadable if i >= 1)
