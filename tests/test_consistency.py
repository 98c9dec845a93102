"""`tripscore consistency` on a real SQLite store and a Parquet log: wrong bins, and records behind or ahead."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batch.backfill import backfill
from batch.consistency import check_consistency, same_value
from batch.eventlog import EVENT_SCHEMA, write_events
from batch.pointintime import RECORD_BINS
from features.fold import fold
from featurestore import open_store
from runtime.config import Settings, load_settings
from schemas.features import RECORD_SET
from tripscore.cli import main

MIN = 60_000
T0 = 1_717_401_600_000  # 2024-06-03T08:00Z
KINDS = ("shift_started", "trip_offered", "offer_accepted", "trip_completed", "trip_offered", "offer_declined")
DRIVERS = ("complete", "lost-tail", "injected", "copies", "absent")


def script(driver: str) -> list[tuple]:
    """Six fold tuples of a driver, one a minute; `copies` logs its last two events twice."""
    events = [(T0 + i * MIN, f"{driver}-{i}", kind, None) for i, kind in enumerate(KINDS)]
    return events + events[-2:] if driver == "copies" else events


def record(events: list[tuple]) -> tuple[str, dict]:
    """What a correct writer stores for these events of one driver."""
    bins = fold(events).to_bins()
    return events[0][1].rsplit("-", 1)[0], {k: v for k, v in bins.items() if k in RECORD_BINS}


@pytest.fixture
def world(tmp_path: Path) -> tuple[Settings, list[Path]]:
    """The log of every driver in two folders (history, live); a store with `complete` and `copies` right,
    `lost-tail` missing its last two events, `injected` one event ahead of the log and `absent` lost altogether."""
    events = [tmp_path / "history", tmp_path / "live"]
    rows = [{"event_id": e[1], "event_type": e[2], "ts_ms": e[0], "driver_id": d, "trip_id": "t", "schema_version": 1,
             **({"pickup_eta_min": 3.0, "surge_multiplier": 1.0, "est_duration_min": 9.0, "rider_rating": 4.5}
                if e[2] == "trip_offered" else {})}
            for d in DRIVERS for e in script(d)]
    log = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
    cutoff = pc.less(log.column("ts_ms"), T0 + 3 * MIN)
    write_events(log.filter(cutoff), events[0])
    write_events(log.filter(pc.invert(cutoff)), events[1])
    settings = load_settings(home=tmp_path, sqlite_path=tmp_path / "features.db")
    newer = (T0 + 30 * MIN, "injected-x", "shift_ended", None)
    open_store(settings).write([record(script("complete")), record(script("copies")),
                                record(script("lost-tail")[:-2]), record([*script("injected"), newer])])
    return settings, events


def test_records_behind_and_ahead_of_the_log_are_reported(world) -> None:
    settings, events = world
    report = check_consistency(open_store(settings), events, list(DRIVERS))
    assert (report.drivers, report.missing_in_store, report.behind, report.ahead) == (4, 1, 1, 1)
    assert report.incomplete_rate() == 3 / 5
    assert set(report.mismatches) == {"_event_ms", "_n_events", "da_shift_start"}  # only `injected` has wrong bins
    by_driver = {example["driver_id"]: example for example in report.examples}
    assert by_driver["lost-tail"] == {"driver_id": "lost-tail", "completeness": {
        "store": "behind", "_event_ms": {"log": T0 + 5 * MIN, "store": T0 + 3 * MIN},
        "_n_events": {"log": 6, "store": 4}}}
    assert by_driver["injected"]["completeness"]["store"] == "ahead"
    assert set(by_driver) == {"lost-tail", "injected"}  # `copies` counts its duplicated events once


@pytest.mark.parametrize(("offline", "online", "same"), [
    (0.5, 0.5 + 1e-12, True), (3, 3.0, True), ([1, 0], [1, 0], True), ([], None, True), (None, None, True),
    (0.5, [0.5], False),  # a one-element list is not its number
    (0.5, "0.5", False), (0.5, b"0.5", False), (1, True, False), ([1, 0], [True, False], False),
    ([1, 0], [1, 0, 0], False), ([], "", False), (2, [2], False), ([2], 2, False), (0.5, None, False),
])
def test_a_stored_value_matches_only_a_number_or_list_like_the_recomputed_one(offline: Any, online: Any,
                                                                               same: bool) -> None:
    assert same_value(offline, online) is same


def test_stored_values_that_are_not_numbers_are_mismatches_not_crashes(world) -> None:
    settings, events = world
    with contextlib.closing(sqlite3.connect(settings.sqlite_file)) as conn, conn:  # behind the store's back
        conn.execute(f'UPDATE "{RECORD_SET}" SET ds_decl_rate = ? WHERE entity_id = ?', (b"0.5", "complete"))
        conn.execute(f'UPDATE "{RECORD_SET}" SET _event_ms = ? WHERE entity_id = ?', ("soon", "copies"))
    report = check_consistency(open_store(settings), events, ["complete", "copies"])
    assert report.drivers == 2 and report.mismatches == {"ds_decl_rate": 1, "_event_ms": 1}
    by_driver = {example["driver_id"]: example for example in report.examples}
    assert by_driver["complete"]["ds_decl_rate"] == {"offline": 0.5, "online": b"0.5"}
    assert by_driver["copies"]["completeness"]["store"] == "unreadable"


@pytest.mark.spark
def test_the_cli_fails_on_lost_records_and_a_backfill_repairs_them(spark, world, monkeypatch, capsys) -> None:
    settings, events = world
    monkeypatch.setenv("TRIPSCORE_HOME", str(settings.home))
    monkeypatch.setenv("TRIPSCORE_SQLITE_PATH", str(settings.sqlite_file))
    assert main(["consistency", "--events", *map(str, events), "--json"]) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (summary["missing_in_store"], summary["behind_log"], summary["ahead_of_log"]) == (1, 1, 1)
    assert "tripscore backfill" in err

    filled = backfill(spark, settings, events, progress=False)  # newer-wins: the injected record stays
    assert (filled.written, filled.skipped, filled.duplicates) == (2, 3, 2)
    summary_after = check_consistency(open_store(settings), events, list(DRIVERS))
    assert (summary_after.missing_in_store, summary_after.behind, summary_after.ahead) == (0, 0, 1)
    open_store(settings).delete(["injected"])  # what an operator does with a record the log cannot explain
    assert main(["backfill", "--events", *map(str, events)]) == 0
    assert main(["consistency", "--events", *map(str, events), "--json"]) == 0
