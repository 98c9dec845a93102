"""The shared record validation: normalisation and batch preparation, independent of any backend."""

from __future__ import annotations

import numpy as np
import pytest

from featurestore.base import BadInput
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
