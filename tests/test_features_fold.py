"""Resuming the fold from a stored record (`DriverState.from_bins`, the stream's seed): the bins as written, and
nothing the store never writes read as a number."""

from __future__ import annotations

from typing import Any

import pytest

from features.fold import DriverState, fold
from featurestore.base import BadInput

EVENTS = [(1_000, "e1", "shift_started", None), (2_000, "e2", "offer_accepted", None),
          (3_000, "e3", "trip_completed", None), (4_000, "e4", "trip_rated", 4.5),
          (5_000, "e5", "offer_declined", None)]


def test_a_stored_record_resumes_the_fold_where_it_stopped() -> None:
    bins = fold(EVENTS[:3]).to_bins()
    resumed = DriverState.from_bins(bins)
    assert resumed.to_bins() == bins
    assert resumed.apply_all(EVENTS[3:]).to_bins() == fold(EVENTS).to_bins()
    assert DriverState.from_bins({}).to_bins() == DriverState().to_bins()


@pytest.mark.parametrize(("name", "value"), [
    ("ds_n_accept", "1"), ("ds_n_accept", [1]), ("ds_n_accept", True), ("_event_ms", 3_000.5),
    ("ds_rating_sum", "4.5"), ("ds_rating_sum", [4.5]), ("ds_rating_sum", float("inf")),
    ("da_resp_1h", "[2000, 1]"), ("da_resp_1h", [2_000, "1"]), ("da_resp_1h", 2_000),
])
def test_a_bin_holding_another_kind_of_value_is_refused_by_name(name: str, value: Any) -> None:
    with pytest.raises(BadInput, match=f"bin '{name}': "):
        DriverState.from_bins({**fold(EVENTS[:3]).to_bins(), name: value})
