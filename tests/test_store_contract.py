"""The online-store contract (docs/spec.md §5), run against every backend: SQLite always, Aerospike when a server
answers."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aerospike import exception as aerospike_errors
from tcp_proxy import TcpProxy

import featurestore.aerospike
import featurestore.sqlite
from features.derive import model_features
from features.fold import DriverState
from featurestore.aerospike import AerospikeStore, parse_hosts
from featurestore.base import NO_RECORD, BadInput, Current, OnlineStore, StoreError, StoreTimeout, StoreUnavailable
from featurestore.metadata import Dataset, Feature, FeatureGroup, MetadataRecord, register_feature_metadata
from featurestore.sqlite import SQLiteStore
from runtime.config import Settings, load_settings
from schemas.features import BIN_NAMES, BINS, RECORD_SET, SERVED_BINS, STREAM_STATE_BIN

TEST_SET_PREFIX = "test-"  # Aerospike tests use their own sets; ids are unique per test and deleted afterwards
READ_BINS = (*SERVED_BINS, "_event_ms")
T0 = 1_780_000_000_000


@dataclass(frozen=True)
class Opener:
    """Opens a store of one backend; picklable, so writer and reader processes open their own."""

    backend: str
    sqlite_path: Path | None = None
    settings: Settings | None = None

    def __call__(self, ttl_s: int = 0) -> OnlineStore:
        if self.backend == "sqlite":
            return SQLiteStore(self.sqlite_path, ttl_s=ttl_s)
        return AerospikeStore(self.settings.with_overrides(store_ttl_s=ttl_s), set_prefix=TEST_SET_PREFIX)


@pytest.fixture(scope="session")
def store_aerospike_settings(aerospike_hosts: str) -> Settings:
    """Settings for the Aerospike under test (conftest's `aerospike_hosts` skips when there is none)."""
    return load_settings(store="aerospike", aerospike_hosts=aerospike_hosts, aerospike_timeout_ms=2_000)


@pytest.fixture(params=[pytest.param("sqlite"), pytest.param("aerospike", marks=pytest.mark.aerospike)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "sqlite":
        return Opener("sqlite", sqlite_path=tmp_path / "store" / "features.db")
    return Opener("aerospike", settings=request.getfixturevalue("store_aerospike_settings"))


@pytest.fixture
def store(opener: Opener) -> Iterator[OnlineStore]:
    with opener() as opened:
        yield opened


@pytest.fixture
def new_ids(store: OnlineStore) -> Iterator[Callable[[int], list[str]]]:
    """Unique driver ids for this test; their records are deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    made: list[str] = []

    def make(count: int) -> list[str]:
        ids = [f"t{tag}-{len(made) + i}" for i in range(count)]
        made.extend(ids)
        return ids

    yield make
    store.delete(made)


def folded(*events: tuple[int, str, str, float | None]) -> dict[str, Any]:
    """The bins of a driver after `events` (offsets from T0 in ms)."""
    return DriverState().apply_all([(T0 + ts, eid, kind, rating) for ts, eid, kind, rating in events]).to_bins()


FULL = folded(
    (0, "e1", "shift_started", None),
    (60_000, "e2", "offer_declined", None),
    (120_000, "e3", "offer_accepted", None),
    (900_000, "e4", "trip_completed", None),
    (901_000, "e5", "trip_rated", 4.5),
)
PARTIAL = folded((0, "e1", "shift_started", None), (600_000, "e2", "trip_completed", None))  # no rating, no response


def versioned(version: int, event_ms: int | None = None) -> dict[str, Any]:
    """A record whose every bin derives from `version`, so a torn mix of two writes is detectable."""
    bins: dict[str, Any] = {
        "ds_total_trips": version,
        "ds_n_accept": version,
        "da_trips_day": version,
        "da_consec_trips": version,
        "ds_rating_sum": float(version),
        "da_resp_1h": [version, version, version],
        "_event_ms": T0 + version if event_ms is None else event_ms,
        "_n_events": version,
    }
    bins["ds_avg_rating" if version % 2 == 0 else "da_accept_1h"] = version / 2
    return bins


def check_versioned(bins: dict[str, Any]) -> int:
    """The version of a record written by `versioned`, asserting every bin agrees with it."""
    version = bins["_n_events"]
    assert bins["_event_ms"] == T0 + version
    for name in ("ds_total_trips", "ds_n_accept", "da_trips_day", "da_consec_trips"):
        assert bins[name] == version, (name, bins)
    assert bins["ds_rating_sum"] == float(version)
    assert bins["da_resp_1h"] == [version] * 3
    present, absent = ("ds_avg_rating", "da_accept_1h") if version % 2 == 0 else ("da_accept_1h", "ds_avg_rating")
    assert bins[present] == version / 2 and absent not in bins, bins
    return version


def test_round_trip_keeps_values_and_types(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    (driver,) = new_ids(1)
    before = int(time.time() * 1000)
    assert store.write([(driver, FULL)]).written == 1
    (row,) = store.read([driver], BIN_NAMES)
    stamped = row.bins.pop("_updated_ms")
    assert row.bins == FULL
    assert before <= stamped <= int(time.time() * 1000) + 1
    for spec in BINS:
        if spec.name in FULL:
            assert type(row.bins[spec.name]) is {"int": int, "float": float, "list": list}[spec.dtype], spec.name


def test_batch_read_present_absent_partial(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    full, partial, ghost = new_ids(3)
    store.write([(full, FULL), (partial, PARTIAL)])
    rows = store.read([full, ghost, partial, full], READ_BINS)
    assert [row.entity_id for row in rows] == [full, ghost, partial, full]
    assert [row.found for row in rows] == [True, False, True, True]
    assert set(rows[0].bins) == set(READ_BINS)
    assert all(status == "present" for status in rows[0].statuses.values())
    assert rows[1].bins is None and set(rows[1].statuses.values()) == {"missing"} and rows[1].age_ms is None
    assert {name for name, status in rows[2].statuses.items() if status == "missing"} == {
        "ds_decl_rate", "ds_avg_rating", "da_accept_1h"
    }
    assert rows[2].bins["ds_total_trips"] == 1
    assert rows[0].age_ms == rows[0].now_ms - FULL["_event_ms"]
    assert store.read([], READ_BINS) == []


def test_matrix_read_holds_the_same_records_as_the_read(store: OnlineStore,
                                                        new_ids: Callable[[int], list[str]]) -> None:
    full, partial, ghost = new_ids(3)
    store.write([(full, FULL), (partial, PARTIAL)])
    ids = [full, ghost, partial, full]
    before = int(time.time() * 1000)
    read = store.read_matrix(ids, READ_BINS)
    assert read.values.shape == (4, len(READ_BINS)) and read.unreadable == ()
    assert before <= read.now_ms <= int(time.time() * 1000) + 1
    for row, values in zip(store.read(ids, READ_BINS), read.values, strict=True):
        wanted = [math.nan if row.bins is None or row.bins.get(name) is None else row.bins[name] for name in READ_BINS]
        assert values.tolist() == pytest.approx(wanted, nan_ok=True, rel=0, abs=0)
    assert read.values[0, READ_BINS.index("_event_ms")] == FULL["_event_ms"]
    assert store.read_matrix([], READ_BINS).values.shape == (0, len(READ_BINS))
    many = [full, ghost] * 400  # beyond one statement's ids
    assert np.array_equal(store.read_matrix(many, READ_BINS).values, np.tile(read.values[:2], (400, 1)),
                          equal_nan=True)
    with pytest.raises(BadInput, match="da_resp_1h.*lists"):
        store.read_matrix([full], ("da_resp_1h",))
    with pytest.raises(BadInput, match="ds_bogus.*unknown bin"):
        store.read_matrix([full], ("ds_total_trips", "ds_bogus"))


NOT_NUMBERS = {  # values another writer (or a hand edit) can leave in a numeric bin; the write path refuses them
    "sqlite": {"text": "inf", "blob": b"0.5", "JSON list": "[0.5]", "infinity": math.inf},
    "aerospike": {"one-element list": [0.5], "numeric string": "0.5", "bytes": bytearray(b"0.5"), "infinity": math.inf},
}


def plant(store: OnlineStore, entity_id: str, name: str, value: Any) -> None:
    """Put `value` in one bin of a stored record behind the store's back."""
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
            conn.execute(f'UPDATE "{RECORD_SET}" SET "{name}" = ? WHERE entity_id = ?', (value, entity_id))
    else:
        store.client().put((store.namespace, store.record_set, entity_id), {name: value})


def test_a_bin_holding_no_number_makes_its_record_unreadable(store: OnlineStore,
                                                             new_ids: Callable[[int], list[str]]) -> None:
    values = NOT_NUMBERS[store.backend]
    good, ghost, *planted = new_ids(2 + len(values))
    store.write([(driver, FULL) for driver in (good, *planted)])
    for driver, value in zip(planted, values.values(), strict=True):
        plant(store, driver, "ds_decl_rate", value)
    read = store.read_matrix([good, *planted, ghost], READ_BINS)
    assert read.unreadable == tuple(range(1, 1 + len(planted))), list(values)
    assert np.isnan(read.values[1:]).all() and read.values[0, READ_BINS.index("ds_decl_rate")] == FULL["ds_decl_rate"]
    for row in store.read(planted, READ_BINS):  # `tripscore features get` reads the same records through `read`
        with pytest.raises(BadInput, match="bin 'ds_decl_rate': .* is not a finite number"):
            model_features(row.bins, row.now_ms, 1.0, 4.5, 1.0, 10.0)


def test_read_selects_only_requested_bins(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    (driver,) = new_ids(1)
    store.write([(driver, FULL)])
    (row,) = store.read([driver], ("da_resp_1h", "ds_total_trips"))
    assert row.bins == {"da_resp_1h": FULL["da_resp_1h"], "ds_total_trips": FULL["ds_total_trips"]}
    assert row.age_ms is None  # `_event_ms` was not requested


def test_older_write_is_ignored(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    (driver,) = new_ids(1)
    store.write([(driver, versioned(5))])
    result = store.write([(driver, versioned(4))])
    assert (result.written, result.skipped) == (0, 1)
    assert check_versioned(store.read([driver], BIN_NAMES)[0].bins) == 5


def test_equal_replay_changes_nothing(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    drivers = new_ids(3)
    store.write([(driver, FULL) for driver in drivers])
    first = store.read(drivers, BIN_NAMES)
    time.sleep(0.01)
    result = store.write([(driver, FULL) for driver in drivers])
    assert (result.written, result.skipped) == (0, 3)
    assert [row.bins for row in store.read(drivers, BIN_NAMES)] == [row.bins for row in first]


def test_same_event_time_more_events_applies(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    (driver,) = new_ids(1)
    store.write([(driver, versioned(2, event_ms=T0 + 3))])
    newer = versioned(3)  # same _event_ms (T0 + 3), more events applied
    assert store.write([(driver, newer)]).written == 1
    assert check_versioned(store.read([driver], BIN_NAMES)[0].bins) == 3


def test_replacing_write_removes_absent_bins(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    (driver,) = new_ids(1)
    store.write([(driver, versioned(2))])  # has ds_avg_rating
    store.write([(driver, versioned(3))])  # has da_accept_1h instead
    bins = store.read([driver], BIN_NAMES)[0].bins
    assert check_versioned(bins) == 3 and "ds_avg_rating" not in bins


def test_duplicates_in_one_write_keep_the_newest(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    (driver,) = new_ids(1)
    result = store.write([(driver, versioned(4)), (driver, versioned(6)), (driver, versioned(5))])
    assert (result.written, result.skipped) == (1, 2)
    assert check_versioned(store.read([driver], BIN_NAMES)[0].bins) == 6


def test_delete_counts_existing_records(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    present, ghost = new_ids(2)
    store.write([(present, FULL)])
    assert store.delete([present, ghost]) == 1
    assert not store.read([present], READ_BINS)[0].found
    assert store.write([(present, FULL)]).written == 1  # a deleted record can be written again


def test_info_and_health(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    drivers = new_ids(2)
    store.write([(drivers[0], versioned(1)), (drivers[1], versioned(9))])
    info = store.info()
    assert info.backend == store.backend and info.records >= 2
    assert info.newest_event_ms >= T0 + 9 and info.oldest_event_ms <= T0 + 1
    assert info.newest_update_ms >= int(time.time() * 1000) - 60_000
    assert set(info.metadata_counts) == {"fg-metadata", "feature-metadata", "dataset-metadata"}
    health = store.health()
    assert health["ok"] is True and health["backend"] == store.backend


def test_ttl_expiry(opener: Opener, new_ids: Callable[[int], list[str]]) -> None:
    (driver,) = new_ids(1)
    with opener(ttl_s=1) as expiring:
        expiring.write([(driver, versioned(1))])
        assert expiring.read([driver], READ_BINS)[0].found
        deadline = time.monotonic() + 5
        while expiring.read([driver], READ_BINS)[0].found and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not expiring.read([driver], READ_BINS)[0].found
        assert expiring.write([(driver, versioned(1))]).written == 1  # an expired record counts as absent


@pytest.fixture
def saved(store: OnlineStore) -> Iterator[list[MetadataRecord]]:
    """Metadata records a test saves; removed from Aerospike afterwards (a SQLite file is temporary anyway)."""
    records: list[MetadataRecord] = []
    yield records
    if isinstance(store, AerospikeStore):
        for record in records:
            with contextlib.suppress(aerospike_errors.RecordNotFound):
                store.client().remove((store.namespace, store.metadata_sets[record.set_name], record.key))


def test_metadata_save_load_query(store: OnlineStore, saved: list[MetadataRecord]) -> None:
    tag = uuid.uuid4().hex[:8]
    group = FeatureGroup(f"fg-{tag}", "test group", source="unit", attrs={"owner": tag}, tags=["test"])
    feature = Feature(group.name, "rate", "float", "a rate", attrs={"owner": tag, "unit": "ratio"}, tags=["served"])
    other = Feature(group.name, "count", "int", attrs={"owner": tag}, tags=["internal"])
    dataset = Dataset(f"ds-{tag}", "examples", features=[feature.fid], predicate="ts < 1", location="/tmp/x")
    saved += [group, feature, other, dataset]
    for record in saved:
        record.save(store)
    assert feature.fid == f"fg-{tag}_rate"
    assert FeatureGroup.load(store, group.name) == group
    assert Feature.load(store, feature.fid) == feature
    assert Dataset.load(store, dataset.name) == dataset
    assert Dataset.load(store, f"absent-{tag}") is None
    assert Feature.query(store, owner=tag) == [other, feature]
    assert Feature.query(store, owner=tag, tag="served") == [feature]
    assert Feature.query(store, fgname=group.name, type="int") == [other]
    assert FeatureGroup.query(store, owner=tag, source="elsewhere") == []
    group.description = "changed"
    group.save(store)
    assert FeatureGroup.load(store, group.name).description == "changed"


def test_register_feature_metadata_is_idempotent(store: OnlineStore) -> None:
    assert register_feature_metadata(store) == register_feature_metadata(store) == (3, len(BINS))
    served = {feature.name for feature in Feature.query(store, entity="driver", tag="served")}
    assert served == set(SERVED_BINS)
    assert Feature.load(store, "driver-stats_ds_decl_rate").type == "float"
    assert FeatureGroup.load(store, "driver-activity").attrs["prefix"] == "da_"


BAD_RECORDS = {
    "unknown bin": ({"ds_bogus": 1}, "unknown bin"),
    "16-byte bin name": ({"ds_sixteen_bytes": 1}, "16 bytes, over the 15-byte limit"),
    "string for int": ({"ds_total_trips": "3"}, "expected an int, got str"),
    "float for int": ({"da_trips_day": 1.5}, "expected an int, got float"),
    "bool for int": ({"ds_total_trips": True}, "expected an int, got bool"),
    "NaN": ({"ds_decl_rate": math.nan}, "must be finite"),
    "infinity": ({"ds_avg_rating": math.inf}, "must be finite"),
    "int too large": ({"ds_total_trips": 2**63}, "does not fit in 64 bits"),
    "oversize list": ({"da_resp_1h": [1] * 1025}, "over the 1024-item limit"),
    "list of strings": ({"da_resp_1h": ["a"]}, "item 0"),
    "list for float": ({"ds_decl_rate": [0.5]}, "expected a float, got list"),
    "missing _event_ms": ({"_event_ms": None}, "'_event_ms': required"),
    "missing _n_events": ({"_n_events": None}, "'_n_events': required"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_bad_record_is_rejected_and_changes_nothing(
    store: OnlineStore, new_ids: Callable[[int], list[str]], case: str
) -> None:
    good, bad = new_ids(2)
    store.write([(good, versioned(1))])
    change, message = BAD_RECORDS[case]
    record = {key: value for key, value in {**versioned(7), **change}.items() if value is not None}
    with pytest.raises(BadInput) as raised:
        store.write([(good, versioned(2)), (bad, record)])  # the good update comes first in the batch
    assert bad in str(raised.value) and message in str(raised.value)
    assert next(iter(change)) in str(raised.value)
    rows = store.read([good, bad], BIN_NAMES)
    assert check_versioned(rows[0].bins) == 1 and not rows[1].found


@pytest.mark.parametrize(
    ("entity_id", "message"),
    [("x" * 65, "longer than 64 bytes"), ("", "non-empty string"), ("a b", "characters outside"), (7, "string")],
)
def test_bad_entity_id_is_rejected(store: OnlineStore, entity_id: Any, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        store.write([(entity_id, versioned(1))])


def test_read_of_unknown_bin_is_rejected(store: OnlineStore) -> None:
    with pytest.raises(BadInput, match="ds_bogus.*unknown bin"):
        store.read(["anyone"], ("ds_total_trips", "ds_bogus"))


def test_metadata_of_unknown_set_or_bad_value_is_rejected(store: OnlineStore) -> None:
    with pytest.raises(BadInput, match="not one of"):
        store.put_metadata("driver-features", "k", {})
    with pytest.raises(BadInput, match="not JSON"):
        store.put_metadata("fg-metadata", "k", {"x": math.nan})


VERSIONS = 60
# ---- compare-and-set: the stream's state holder ------------------------------------------------------------------


def state_record(version: int) -> dict[str, Any]:
    """`versioned(version)` with stream state bytes that also carry the version."""
    return {**versioned(version), STREAM_STATE_BIN: b"v" + bytes([version % 256]) * 3}


def test_compare_and_set_creates_replaces_and_refuses_a_record_that_moved_on(
        store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    driver, other = new_ids(2)
    assert store.read_current([driver, other]) == [NO_RECORD, NO_RECORD]
    assert store.compare_and_set([(driver, state_record(1), NO_RECORD)]) == []
    (first,) = store.read_current([driver])
    assert check_versioned(first.bins) == 1 and first.bins[STREAM_STATE_BIN] == b"v\x01\x01\x01"
    assert first.generation > 0 and isinstance(first.bins["_updated_ms"], int)
    assert store.compare_and_set([(driver, state_record(2), NO_RECORD)]) == [driver]  # another first write got there
    assert store.compare_and_set([(driver, state_record(3), first), (other, state_record(7), NO_RECORD)]) == []
    assert store.compare_and_set([(driver, state_record(4), first)]) == [driver]  # as read, but it moved on
    current, created = store.read_current([driver, other])
    assert (check_versioned(current.bins), check_versioned(created.bins)) == (3, 7)
    assert current.generation != first.generation and current.bins[STREAM_STATE_BIN] == b"v\x03\x03\x03"
    assert store.read([driver], READ_BINS)[0].bins == {k: v for k, v in state_record(3).items() if k in READ_BINS}


def test_compare_and_set_replaces_the_whole_record(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    (driver,) = new_ids(1)
    store.compare_and_set([(driver, state_record(2), NO_RECORD)])  # has ds_avg_rating and stream state
    (current,) = store.read_current([driver])
    assert store.compare_and_set([(driver, versioned(3), current)]) == []  # neither
    (after,) = store.read_current([driver])
    assert check_versioned(after.bins) == 3 and "ds_avg_rating" not in after.bins
    assert STREAM_STATE_BIN not in after.bins


def test_a_newer_wins_write_moves_the_generation_on(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    """A backfill's write between the stream's read and its write makes the stream's write lose, not overwrite."""
    (driver,) = new_ids(1)
    store.compare_and_set([(driver, state_record(1), NO_RECORD)])
    (read,) = store.read_current([driver])
    assert store.write([(driver, versioned(5))]).written == 1
    assert store.compare_and_set([(driver, state_record(6), read)]) == [driver]
    (current,) = store.read_current([driver])
    assert check_versioned(current.bins) == 5 and STREAM_STATE_BIN not in current.bins


def test_bad_compare_and_set_is_rejected_and_writes_nothing(
        store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    good, bad = new_ids(2)
    with pytest.raises(BadInput, match="given twice"):
        store.compare_and_set([(good, state_record(1), NO_RECORD), (good, state_record(2), NO_RECORD)])
    with pytest.raises(BadInput, match=f"bin '{STREAM_STATE_BIN}': expected bytes"):
        store.compare_and_set([(good, state_record(1), NO_RECORD),
                               (bad, {**versioned(1), STREAM_STATE_BIN: "text"}, NO_RECORD)])
    with pytest.raises(BadInput, match="the record read must be a Current with a generation >= 0"):
        store.compare_and_set([(good, state_record(1), Current(None, -1))])
    assert store.read_current([good, bad]) == [NO_RECORD, NO_RECORD]


def test_an_expired_record_counts_as_none_for_compare_and_set(
        opener: Opener, new_ids: Callable[[int], list[str]]) -> None:
    (driver,) = new_ids(1)
    with opener(ttl_s=1) as expiring:
        expiring.compare_and_set([(driver, state_record(1), NO_RECORD)])
        deadline = time.monotonic() + 5
        while expiring.read_current([driver])[0].bins is not None and time.monotonic() < deadline:
            time.sleep(0.25)
        assert expiring.read_current([driver]) == [NO_RECORD]
        assert expiring.compare_and_set([(driver, state_record(2), NO_RECORD)]) == []
        assert check_versioned(expiring.read_current([driver])[0].bins) == 2


INCREMENTS = 25


def _incrementer(opener: Opener, ids: list[str], go: Any, results: Any) -> None:
    """Read-modify-write: add one to every record's version, `INCREMENTS` times, retrying what moved on."""
    lost = 0
    try:
        with opener() as store:
            go.wait()
            for _ in range(INCREMENTS):
                todo = ids
                while todo:
                    current = store.read_current(todo)
                    todo = store.compare_and_set([
                        (entity_id, versioned(check_versioned(now.bins) + 1 if now.bins else 1), now)
                        for entity_id, now in zip(todo, current, strict=True)])
                    lost += len(todo)
        results.put((lost, None))
    except BaseException as exc:  # reported to the test process
        results.put((lost, repr(exc)))


def test_concurrent_read_modify_writes_lose_no_update(
        opener: Opener, store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    """Three processes increment the same records: every increment lands once (compare-and-set), none is torn."""
    ids = new_ids(5)
    context = multiprocessing.get_context("spawn")
    go, results = context.Event(), context.Queue()
    workers = [context.Process(target=_incrementer, args=(opener, ids, go, results)) for _ in range(3)]
    for process in workers:
        process.start()
    go.set()
    outcomes = [results.get(timeout=300) for _ in workers]
    for process in workers:
        process.join(30)
    assert [error for _, error in outcomes] == [None] * len(workers)
    assert [check_versioned(now.bins) for now in store.read_current(ids)] == [3 * INCREMENTS] * len(ids)


RECORDS = 40


def _writer(opener: Opener, ids: list[str], go: Any) -> None:
    with opener() as store:
        go.wait()
        for version in range(1, VERSIONS + 1):
            store.write([(entity_id, versioned(version)) for entity_id in ids])
            if version > 2:  # a late replay of an older micro-batch must change nothing
                store.write([(entity_id, versioned(version - 2)) for entity_id in ids])
            time.sleep(0.002)


def _reader(opener: Opener, ids: list[str], go: Any, done: Any, results: Any) -> None:
    seen = dict.fromkeys(ids, 0)
    reads, versions = 0, set()
    try:
        with opener() as store:
            go.wait()
            while not done.is_set():
                for row in store.read(ids, BIN_NAMES):
                    if row.found:
                        version = check_versioned(row.bins)
                        assert version >= seen[row.entity_id], f"{row.entity_id} went back to {version}"
                        seen[row.entity_id] = version
                        versions.add(version)
                reads += 1
        results.put((reads, len(versions), None))
    except BaseException as exc:  # reported to the test process
        results.put((reads, len(versions), repr(exc)))


def test_concurrent_writer_and_readers_never_see_torn_or_older_records(
    opener: Opener, store: OnlineStore, new_ids: Callable[[int], list[str]]
) -> None:
    ids = new_ids(RECORDS)
    context = multiprocessing.get_context("spawn")
    readers = 3
    go = context.Barrier(readers + 2)  # every process has imported and opened its store, and so has this one
    done, results = context.Event(), context.Queue()
    processes = [context.Process(target=_reader, args=(opener, ids, go, done, results)) for _ in range(readers)]
    writer = context.Process(target=_writer, args=(opener, ids, go))
    for process in (*processes, writer):
        process.start()
    go.wait(timeout=120)
    writer.join(120)
    done.set()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
    assert writer.exitcode == 0
    assert [error for *_, error in outcomes] == [None] * readers
    assert all(reads > 5 and versions > 3 for reads, versions, _ in outcomes), outcomes  # they overlapped the writer
    assert [check_versioned(row.bins) for row in store.read(ids, BIN_NAMES)] == [VERSIONS] * RECORDS


def test_one_store_is_shared_by_threads(store: OnlineStore, new_ids: Callable[[int], list[str]]) -> None:
    ids = new_ids(10)
    store.write([(entity_id, versioned(1)) for entity_id in ids])
    errors: list[BaseException] = []

    def read_many() -> None:
        try:
            for _ in range(100):
                assert all(check_versioned(row.bins) >= 1 for row in store.read(ids, BIN_NAMES))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=read_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for version in range(2, 30):
        store.write([(entity_id, versioned(version)) for entity_id in ids])
    for thread in threads:
        thread.join()
    assert errors == []
    assert {check_versioned(row.bins) for row in store.read(ids, BIN_NAMES)} == {29}


def test_unreachable_aerospike_fails_fast_as_unavailable() -> None:
    settings = load_settings(store="aerospike", aerospike_hosts="127.0.0.1:1", aerospike_timeout_ms=50)
    store = AerospikeStore(settings)
    for _ in range(2):  # the second call is refused without reconnecting (back-off)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unreachable"):
            store.read(["d1"], READ_BINS)
        assert time.monotonic() - started < 2.0
    assert store.health()["ok"] is False


class SQLiteOutage:
    """`gone`: the store's directory is moved away, so no connection opens; `stalled`: another one holds the lock."""

    reads_wait_on_writes = False  # WAL: readers never wait for a writer

    def __init__(self, path: Path) -> None:
        self.home = path.parent
        self.away = path.parent.with_name(path.parent.name + "-away")
        self.locker: sqlite3.Connection | None = None

    def begin(self, kind: str) -> None:
        if kind == "gone":
            self.home.rename(self.away)
        else:
            self.locker = sqlite3.connect(self.home / "features.db", isolation_level=None)
            self.locker.execute("BEGIN IMMEDIATE")

    def last(self, kind: str) -> bool:
        """Nothing changes as the outage goes on."""
        return False

    def end(self) -> None:
        if self.away.exists():
            self.away.rename(self.home)
        if self.locker is not None:
            self.locker.close()  # rolls the open transaction back


class AerospikeOutage:
    """`gone`: the proxy drops every connection and refuses new ones; `stalled`: it holds every byte."""

    reads_wait_on_writes = True

    def __init__(self, proxy: TcpProxy, store: AerospikeStore) -> None:
        self.proxy = proxy
        self.store = store

    def begin(self, kind: str) -> None:
        if kind == "gone":
            self.proxy.cut()
        else:
            self.proxy.stall()

    def last(self, kind: str) -> bool:
        """For `gone`: wait until the client has dropped the node, as in any outage of a few seconds; True then."""
        if kind != "gone":
            return False
        deadline = time.monotonic() + 15
        while self.store.client().get_nodes():
            assert time.monotonic() < deadline, "the client still holds a node it cannot reach"
            time.sleep(0.2)
        return True

    def end(self) -> None:
        self.proxy.restore()


Outage = SQLiteOutage | AerospikeOutage
STORE_DOWN = (StoreUnavailable, StoreTimeout)


@pytest.fixture
def outage(opener: Opener, monkeypatch: pytest.MonkeyPatch,
           request: pytest.FixtureRequest) -> Iterator[tuple[OnlineStore, Outage]]:
    """A store of the backend under test whose server or file a test can take away; its own deadlines shortened."""
    if opener.backend == "sqlite":
        monkeypatch.setattr(featurestore.sqlite, "BUSY_TIMEOUT_MS", 300)
        with opener() as store:
            yield store, SQLiteOutage(opener.sqlite_path)
        return
    monkeypatch.setattr(featurestore.aerospike, "WRITE_TIMEOUT_MS", 1_000)
    monkeypatch.setattr(featurestore.aerospike, "SCAN_TIMEOUT_MS", 1_000)
    target = parse_hosts(request.getfixturevalue("aerospike_node"))[0][:2]
    with TcpProxy(target) as proxy:
        settings = opener.settings.with_overrides(aerospike_hosts=proxy.address, aerospike_timeout_ms=500)
        with Opener("aerospike", settings=settings)() as store:
            # the client keeps the seed's address for the node it finds there and learns others from its peers list,
            # which leaves the node itself out: a one-node cluster is reached through the proxy only (a larger one
            # would show its other nodes' own addresses here)
            assert store.client().get_nodes() == [("127.0.0.1", proxy.port)], store.client().get_nodes()
            assert proxy.accepted > 0
            yield store, AerospikeOutage(proxy, store)


def in_new_thread(call: Callable[[], Any]) -> Any:
    """What `call` returns, or the exception it raises, on a thread of its own (which opens its own connection)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # returned to the test
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return outcome[0]


@pytest.mark.parametrize("kind", ["gone", "stalled"])
def test_outage_raises_store_errors_and_the_same_store_recovers(
    outage: tuple[OnlineStore, Outage], new_ids: Callable[[int], list[str]], kind: str
) -> None:
    store, control = outage
    kept, added, ghost = new_ids(3)
    store.write([(kept, versioned(1))])
    writes = {"write": lambda: store.write([(added, versioned(2))]), "delete": lambda: store.delete([ghost])}
    reads = {"read": lambda: store.read([kept, added], BIN_NAMES), "info": store.info,
             "metadata": lambda: store.get_metadata("dataset-metadata", ghost)}

    def attempt() -> dict[str, Any]:
        """What each call returns or raises, each on a new thread."""
        return {name: in_new_thread(call) for name, call in {**writes, **reads, "health": store.health}.items()}

    control.begin(kind)
    try:
        attempts = [attempt()]
        if control.last(kind):
            attempts.append(attempt())
    finally:
        control.end()
    down = StoreTimeout if kind == "stalled" else STORE_DOWN
    reads_fail = kind == "gone" or control.reads_wait_on_writes
    for outcomes in attempts:
        for name in (*writes, *(reads if reads_fail else ())):
            assert isinstance(outcomes[name], down), (name, outcomes[name])
        assert outcomes["health"]["ok"] is not reads_fail
        if not reads_fail:
            assert [row.found for row in outcomes["read"]] == [True, False]
    deadline = time.monotonic() + 15
    while isinstance(written := in_new_thread(writes["write"]), STORE_DOWN):
        assert time.monotonic() < deadline, f"the store did not recover: {written!r}"
        time.sleep(0.2)
    assert written.written + written.skipped == 1  # a write that timed out may still have landed
    assert [check_versioned(row.bins) for row in store.read([kept, added], BIN_NAMES)] == [1, 2]
    assert store.health()["ok"] is True


@pytest.mark.aerospike
def test_refused_credentials_are_a_store_error_not_an_outage(store_aerospike_settings: Settings) -> None:
    settings = store_aerospike_settings.with_overrides(aerospike_user="nobody", aerospike_password="wrong")
    with pytest.raises(StoreError, match="refused") as raised:
        AerospikeStore(settings).read(["d1"], READ_BINS)
    assert not isinstance(raised.value, StoreUnavailable | StoreTimeout)
