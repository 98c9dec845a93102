"""Idle drivers' states dropped from their bucket (no Spark, a real SQLite store as the sink would write it): a
dropped driver's next events start from its store record and give the records a kept state would have."""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features.fold import fold
from featurestore import close_stores, open_store
from runtime.config import Settings
from schemas.features import BIN_NAMES
from streaming.driver_state import dump_state
from streaming.parse import pack
from streaming.stateful import DUPLICATE, EVICTED, INVALID, LATE, RECORD, bucket_update, dump_bucket, load_bucket
from tripscore.cli import main

MIN = 60_000
DRIVERS = ["d0", "d1"]
TYPES = ["trip_offered", "offer_accepted", "offer_declined", "trip_completed", "shift_started"]

Event = tuple[str, int, str, str]  # driver id, event time, event id, event type
Batch = tuple[list[Event], int]  # its events and its watermark


def cell(events: list[Event], offset: int = 0) -> bytes:
    """The batch's records packed as stage 1 would (one Arrow batch)."""
    by_driver: dict[str, list[tuple]] = {}
    for i, (driver_id, ts, event_id, event_type) in enumerate(events):
        record = ((ts, event_id, event_type, None), 0, offset + i, driver_id.encode(), b"{}")
        by_driver.setdefault(driver_id, []).append(record)
    return pack(by_driver)


class Run:
    """Stage 2 of one bucket over micro-batches, its records written to a fresh SQLite store, as the sink does."""

    def __init__(self, home: Path, idle_ms: int) -> None:
        self.settings = Settings(home=home, sqlite_path=home / "features.db")
        self.idle_ms, self.bucket, self.offset = idle_ms, None, 0
        self.counts = dict.fromkeys((RECORD, INVALID, LATE, DUPLICATE, EVICTED), 0)
        # driver id -> its latest event time when its state was last dropped: a state started again from the store
        # record knows that time but not the id of the event at it, until a newer event is committed
        self.dropped: dict[str, int] = {}

    def batch(self, events: list[Event], watermark_ms: int) -> list[tuple[str, bytes | None, bytes]]:
        before = set(load_bucket(self.bucket)) if self.bucket else set()
        state, rows = bucket_update(self.settings, "t", [cell(events, self.offset)], self.bucket, watermark_ms,
                                    self.idle_ms)
        self.offset += len(events)
        self.bucket = state or self.bucket
        records = []
        for kind, key, payload in rows:
            if kind == RECORD:
                bins, accepted_ms = json.loads(payload)
                records.append((key.decode(), bins))
                self.counts[RECORD] += len(accepted_ms)
            else:
                self.counts[kind] += int(payload) if kind in (DUPLICATE, EVICTED) else 1
        open_store(self.settings).write(records)
        entries = load_bucket(self.bucket) if self.bucket else {}
        for driver_id in before | {e[0] for e in events}:
            if driver_id not in entries and (stored := self.stored().get(driver_id)) is not None:
                self.dropped[driver_id] = stored["_event_ms"]
        assert all(latest + self.idle_ms > watermark_ms for latest, _ in entries.values())  # no idle one kept
        return rows

    def stored(self) -> dict[str, dict[str, Any]]:
        """The store's records, without the write stamp."""
        rows = open_store(self.settings).read(DRIVERS, BIN_NAMES)
        return {row.entity_id: {k: v for k, v in row.bins.items() if k != "_updated_ms"}
                for row in rows if row.bins is not None}


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[Batch], int]:
    """Up to five micro-batches of two drivers' events (out of order, ids reused), rising watermarks, an idle time."""
    watermarks = sorted(draw(st.lists(st.integers(0, 300), min_size=1, max_size=5)))
    batches = []
    for watermark in watermarks:
        events = [(draw(st.sampled_from(DRIVERS)), draw(st.integers(0, 300)) * MIN, f"e{draw(st.integers(0, 4))}",
                   draw(st.sampled_from(TYPES))) for _ in range(draw(st.integers(0, 6)))]
        batches.append((events, watermark * MIN))
    return batches, draw(st.sampled_from([1, 10, 60])) * MIN


@settings(max_examples=150, deadline=None)
@given(runs())
@example(([([("d0", 5 * MIN, "e1", "trip_completed")], 0), ([("d1", 100 * MIN, "e1", "trip_completed")], 90 * MIN),
           ([("d0", 120 * MIN, "e2", "offer_declined")], 100 * MIN)], 10 * MIN))
@example(([([("d0", 0, "e0", "trip_offered"), ("d0", MIN, "e0", "trip_offered")], 2 * MIN),  # found: the tie can
           ([("d0", 3 * MIN, "e0", "trip_offered"), ("d0", 0, "e0", "trip_offered")], 2 * MIN),  # come batches after
           ([("d0", MIN, "e1", "trip_offered")], 2 * MIN)], MIN))  # the driver is back, while nothing newer is final
def test_dropping_idle_drivers_changes_no_record(run: tuple[list[Batch], int]) -> None:
    batches, idle_ms = run
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        evicting, keeping = Run(Path(a), idle_ms), Run(Path(b), 10**15)
        # The one difference: an event at the very time of a dropped driver's latest event is covered by its store
        # record where the kept state could still fold it after that event (same time, later id), in any later batch
        tie = False
        for events, watermark_ms in batches:
            tie |= any(e[1] == evicting.dropped.get(e[0]) for e in events)
            for side in (evicting, keeping):
                rows = side.batch(events, watermark_ms)
                assert sum(int(p) if k == DUPLICATE else len(json.loads(p)[1]) if k == RECORD else 1
                           for k, _, p in rows if k != EVICTED) == len(events)  # one outcome per record
        assert keeping.counts[EVICTED] == 0
        if not tie:
            assert evicting.stored() == keeping.stored()
            assert evicting.counts[RECORD] == keeping.counts[RECORD]  # every accepted event accepted in both
            # older ones are late for a kept state, duplicates of a store record for a dropped one: neither applied
            not_applied = [side.counts[LATE] + side.counts[DUPLICATE] for side in (evicting, keeping)]
            assert not_applied[0] == not_applied[1]
        close_stores()


def test_an_idle_driver_is_dropped_and_resumes_from_its_store_record(tmp_path: Path) -> None:
    run = Run(tmp_path, idle_ms=60 * MIN)
    first = [("d0", 1 * MIN, "e1", "shift_started"), ("d0", 2 * MIN, "e2", "offer_declined"),
             ("d0", 3 * MIN, "e3", "trip_completed")]
    run.batch(first, 0)
    run.batch([("d1", 70 * MIN, "e1", "shift_started")], 62 * MIN)  # d0 is 59 minutes behind: kept
    assert set(load_bucket(run.bucket)) == {"d0", "d1"} and run.counts[EVICTED] == 0
    run.batch([("d1", 71 * MIN, "e2", "trip_completed")], 63 * MIN)  # 60 minutes behind: dropped
    assert set(load_bucket(run.bucket)) == {"d1"} and run.counts[EVICTED] == 1
    later = ("d0", 80 * MIN, "e4", "offer_accepted")
    run.batch([later, ("d0", 2 * MIN, "e2", "offer_declined")], 64 * MIN)  # resumes; the old one is a duplicate
    expected = fold([(ts, event_id, kind, None) for _, ts, event_id, kind in [*first, later]]).to_bins()
    assert run.stored()["d0"] == expected
    assert run.counts[DUPLICATE] == 1 and run.counts[LATE] == 0


def test_a_bucket_saved_before_eviction_existed_is_read_and_its_idle_drivers_dropped(tmp_path: Path) -> None:
    old = {"d0": dump_state({"c": fold([(MIN, "e1", "trip_completed", None)]).to_bins(), "p": [],
                             "d": [(MIN, "e1", "trip_completed", None)]}),
           "d1": dump_state({"c": None, "p": [(50 * MIN, "e1", "trip_completed", None)], "d": []})}
    run = Run(tmp_path, idle_ms=10 * MIN)
    run.bucket = dump_bucket(old)  # {driver id: state}, the form before eviction
    run.batch([("d1", 51 * MIN, "e2", "trip_completed")], 40 * MIN)
    entries = load_bucket(run.bucket)
    assert set(entries) == {"d1"} and run.counts[EVICTED] == 1  # d0: latest event 39 minutes behind
    assert entries["d1"][0] == 51 * MIN
    assert pickle.loads(entries["d1"][1])["p"] == [(50 * MIN, "e1", "trip_completed", None),
                                                   (51 * MIN, "e2", "trip_completed", None)]


@pytest.mark.parametrize(("flag", "value", "problem"), [
    ("--state-idle-s", "0", "(TRIPSCORE_STREAM_STATE_IDLE_S) must be above 0"),
    ("--state-idle-s", "-5", "(TRIPSCORE_STREAM_STATE_IDLE_S) must be above 0"),
    ("--state-buckets", "0", "(TRIPSCORE_STREAM_STATE_BUCKETS) must be above 0"),
    ("--state-buckets", "-64", "(TRIPSCORE_STREAM_STATE_BUCKETS) must be above 0")])
def test_a_state_flag_that_is_not_above_zero_is_refused_naming_it(flag: str, value: str, problem: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    assert main(["stream", flag, value]) == 2
    assert f"{flag} {problem}" in caplog.text


@pytest.mark.parametrize("setting", ["TRIPSCORE_STREAM_STATE_IDLE_S", "TRIPSCORE_STREAM_STATE_BUCKETS"])
def test_a_state_setting_that_is_not_above_zero_is_refused_naming_it(setting: str, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(setting, "0")
    assert main(["stream"]) == 2
    assert f"tripscore stream: {setting} must be above 0, got 0" in capsys.readouterr().err
