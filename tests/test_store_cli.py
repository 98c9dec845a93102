"""`tripscore store info|init` and `tripscore features get` on a SQLite store file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from features.fold import DriverState
from featurestore import close_stores, open_store
from featurestore.sqlite import SQLiteStore
from runtime.config import load_settings
from schemas.features import FOLD_BINS, MODEL_FEATURES
from tripscore.cli import main

NOW_MS = int(time.time() * 1000)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "features.db"
    with SQLiteStore(path) as store:
        events = [(NOW_MS - 3_600_000, "a", "shift_started", None), (NOW_MS - 60_000, "b", "offer_declined", None)]
        store.write([("d1", DriverState().apply_all(events).to_bins())])
    yield path
    close_stores()


def test_store_info_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "info", "--store", "sqlite", "--sqlite-path", str(db), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["backend"], info["records"], info["newest_event_ms"]) == ("sqlite", 1, NOW_MS - 60_000)
    assert info["health"]["ok"] is True and info["health"]["journal_mode"] == "wal"


def test_store_init_registers_metadata_then_info_counts_it(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "init", "--sqlite-path", str(db)]) == 0
    assert main(["store", "info", "--sqlite-path", str(db)]) == 0
    out = capsys.readouterr().out
    assert "registered 3 feature groups" in out and "fg-metadata=3" in out and "records       1" in out


def test_features_get_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "get", "d1", "--json", "--sqlite-path", str(db)]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["found"] and view["status"] == "partial"  # no rating yet
    assert set(view["bin_status"]) == {*FOLD_BINS, "_updated_ms"} and view["bin_status"]["ds_avg_rating"] == "missing"
    assert view["bins"]["ds_decl_rate"] == 1.0 and view["age_ms"] == view["at_ms"] - (NOW_MS - 60_000)
    assert [*view["model_features"], *view["request_features"]] == list(MODEL_FEATURES)
    assert view["model_features"]["decline_rate"] == 1.0 and view["model_features"]["avg_rating"] is None


def test_features_get_text_and_absent_driver(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "get", "d1", "--sqlite-path", str(db)]) == 0
    out = capsys.readouterr().out
    assert "ds_avg_rating    missing" in out and "hours_on_shift" in out and "(request)" in out
    assert main(["features", "get", "nobody", "--sqlite-path", str(db)]) == 1
    assert "no record" in capsys.readouterr().out


def test_open_store_is_one_instance_per_location(tmp_path: Path) -> None:
    settings = load_settings(store="sqlite", sqlite_path=tmp_path / "a.db")
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(open_store(settings))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len({id(store) for store in seen}) == 1
        assert open_store(load_settings(store="sqlite", sqlite_path=tmp_path / "b.db")) is not seen[0]
        with pytest.raises(ValueError, match="unknown store backend"):
            open_store(load_settings(store="redis"))
    finally:
        close_stores()


def test_the_cli_parser_loads_no_spark_or_dataset_libraries() -> None:
    """`tripscore score` must start light: building the parser imports every stage's CLI module, none of the jobs."""
    code = ("import sys; from tripscore.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('pyspark', 'pandas', 'pyarrow.dataset', 'matplotlib') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
