"""SQLite-only behaviour: the file, its journal mode, an older schema, a closed store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from featurestore.base import StoreError, StoreUnavailable
from featurestore.sqlite import SQLiteStore
from schemas.features import BIN_NAMES


def test_creates_parent_dirs_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "features.db"
    with SQLiteStore(path) as store:
        assert store.health()["journal_mode"] == "wal"
    assert path.exists()
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"driver-features", "fg-metadata", "feature-metadata", "dataset-metadata"}


def test_a_file_from_an_older_registry_gains_the_new_bins(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE "driver-features" (entity_id TEXT PRIMARY KEY NOT NULL, _event_ms INTEGER, '
                     "_n_events INTEGER, _updated_ms INTEGER, _expires_ms INTEGER NOT NULL) WITHOUT ROWID")
        conn.execute("INSERT INTO \"driver-features\" VALUES ('old', 5, 1, 6, 9223372036854775807)")
    with SQLiteStore(path) as store:
        assert store.read(["old"], BIN_NAMES)[0].bins == {"_event_ms": 5, "_n_events": 1, "_updated_ms": 6}
        assert store.write([("old", {"_event_ms": 7, "_n_events": 2, "ds_total_trips": 3})]).written == 1
        assert store.read(["old"], ("ds_total_trips",))[0].bins == {"ds_total_trips": 3}


def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "features.db")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.read(["d1"], ("_event_ms",))


def test_a_full_disk_is_unavailable_and_the_store_writes_again_once_there_is_room(tmp_path: Path) -> None:
    record = {"_event_ms": 5, "_n_events": 1, "da_resp_1h": list(range(1000))}
    with SQLiteStore(tmp_path / "features.db") as store:
        conn = store._conn()  # this thread's connection: its page limit stands in for a full disk (root has no quota)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StoreUnavailable, match="disk is full"):
            store.write([(f"d{i}", record) for i in range(50)])
        assert not store.read(["d0"], ("_event_ms",))[0].found
        conn.execute("PRAGMA max_page_count = 1073741823")
        assert store.write([(f"d{i}", record) for i in range(50)]).written == 50
