"""Batch jobs on real Spark and a real SQLite store: backfill, materialize, train, retrain, errors."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array

from batch.backfill import backfill
from batch.eventlog import EventLogError, write_events
from batch.generate import City, generate_city
from batch.materialize import materialize
from batch.options import DEFAULT_DATASET, DatasetError
from batch.pointintime import RECORD_BINS
from batch.retrain import EXIT_KEPT
from batch.train import MLLIB_DIR, PLOT_FILES, REPORT_FILE, TrainResult, train
from features.fold import fold
from featurestore import open_store
from featurestore.base import OnlineStore
from featurestore.metadata import Dataset, FeatureGroup
from modelregistry.export import ModelExport
from modelregistry.registry import active_version
from runtime.config import Settings, load_settings
from schemas.features import MODEL_FEATURES
from tripscore.cli import main

pytestmark = pytest.mark.spark


@dataclass
class World:
    """One generated city run through materialize and train, shared by the tests of this module."""

    city: City
    events: Path
    settings: Settings
    store: OnlineStore
    trained: TrainResult


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("batch")
    city = generate_city(seed=11, drivers=160, days=10, workers=1)
    events = root / "events"
    write_events(city.events, events)
    settings = load_settings(home=root, sqlite_path=root / "features.db", models_dir=root / "models",
                             datasets_dir=root / "datasets")
    store = open_store(settings)
    materialize(spark, store, events, settings.datasets_dir, progress=False)
    trained = train(spark, settings.datasets_dir, settings.models_dir, DEFAULT_DATASET, progress=False)
    return World(city, events, settings, store, trained)


def test_backfill_writes_the_fold_of_every_driver(spark, world: World, tmp_path: Path) -> None:
    settings = world.settings.with_overrides(sqlite_path=tmp_path / "backfill.db")
    result = backfill(spark, settings, world.events, batch_size=50, progress=False)
    by_driver: dict[str, list[tuple]] = defaultdict(list)
    for row in world.city.events.to_pylist():
        by_driver[row["driver_id"]].append((row["ts_ms"], row["event_id"], row["event_type"], row["rating"]))
    assert (result.drivers, result.written, result.skipped) == (len(by_driver), len(by_driver), 0)
    assert result.events == world.city.events.num_rows
    rows = open_store(settings).read(sorted(by_driver), RECORD_BINS)
    for row in rows:
        expected = {k: v for k, v in fold(by_driver[row.entity_id]).to_bins().items() if k in RECORD_BINS}
        assert row.bins == expected, row.entity_id
    again = backfill(spark, settings, world.events, progress=False)  # a replay changes nothing
    assert (again.written, again.skipped) == (0, len(by_driver))


def test_backfill_never_clobbers_a_fresher_record(spark, world: World, tmp_path: Path) -> None:
    settings = world.settings.with_overrides(sqlite_path=tmp_path / "fresh.db")
    store = open_store(settings)
    driver = world.city.events.column("driver_id")[0].as_py()
    fresh = {"_event_ms": world.city.end_ms + 60_000, "_n_events": 1, "ds_total_trips": 999}
    store.write([(driver, fresh)])
    result = backfill(spark, settings, world.events, progress=False)
    assert result.skipped == 1
    bins = store.read([driver], ("_event_ms", "ds_total_trips", "ds_n_accept"))[0].bins
    assert bins == {"_event_ms": fresh["_event_ms"], "ds_total_trips": 999}


def test_materialize_saves_point_in_time_examples_and_metadata(world: World) -> None:
    folder = world.settings.datasets_dir / DEFAULT_DATASET
    examples = pq.read_table(folder)
    assert examples.num_rows == world.city.offers
    assert sum(examples.column("label").to_pylist()) == int(world.city.labels.sum())
    assert examples.column("true_decline_p").null_count == 0
    assert examples.column("decline_rate").null_count > 0  # first offers have no history
    dataset = Dataset.load(world.store, DEFAULT_DATASET)
    assert dataset is not None and dataset.location == str(folder.resolve())
    assert dataset.attrs["rows"] == world.city.offers and dataset.attrs["model_features"] == list(MODEL_FEATURES)
    assert dataset.predicate and dataset.description and "point-in-time" in dataset.tags
    assert "driver-stats_ds_decl_rate" in dataset.features
    assert FeatureGroup.load(world.store, "driver-activity") is not None
    assert Dataset.query(world.store, tag="training", has_true_p=True) == [dataset]


def test_numpy_export_equals_mllib_probability(spark, world: World) -> None:
    folder = world.trained.folder
    model = PipelineModel.load(str((folder / MLLIB_DIR).resolve()))
    export = ModelExport.load(folder)
    frame = spark.read.parquet(str(world.settings.datasets_dir / DEFAULT_DATASET))
    scored = model.transform(frame).select(*MODEL_FEATURES, vector_to_array("probability")[1].alias("p")).toArrow()
    features = np.column_stack([scored.column(n).to_numpy(zero_copy_only=False) for n in MODEL_FEATURES])
    assert scored.num_rows >= 1_000 and np.isnan(features).any(axis=1).sum() >= 50
    gap = np.abs(export.predict_proba(features.astype(np.float64)) - scored.column("p").to_numpy())
    assert gap.max() <= 1e-9


def test_model_auc_is_close_to_the_oracle_and_the_folder_is_complete(world: World) -> None:
    m = world.trained.export.metrics
    assert m["auc"] >= 0.97 * m["oracle_auc"], (m["auc"], m["oracle_auc"])
    folder = world.trained.folder
    assert world.trained.version == "trip_decline_risk_lr_v1"
    for name in (*PLOT_FILES.values(), REPORT_FILE, "export.json"):
        assert (folder / name).stat().st_size > 0
    assert (folder / MLLIB_DIR / "stages").is_dir()
    report = json.loads((folder / REPORT_FILE).read_text())
    assert report["metrics"]["holdout_rows"] + report["metrics"]["train_rows"] == world.city.offers
    assert len(report["metrics"]["calibration"]) == 10
    export = world.trained.export
    assert 0.2 < export.prior < 0.6 and sum(export.score_histogram["fractions"]) == pytest.approx(1.0)
    holdout_start = m["holdout_start_ms"]
    times = pq.read_table(world.settings.datasets_dir / DEFAULT_DATASET, columns=["offer_ts_ms"]).column(0)
    assert np.mean(times.to_numpy() >= holdout_start) == pytest.approx(0.2, abs=0.01)  # split by time


def test_cli_retrain_refuses_a_worse_model_and_models_commands(world: World, monkeypatch, capsys) -> None:
    s = world.settings
    for name, value in (("HOME", s.home), ("SQLITE_PATH", s.sqlite_file), ("MODELS_DIR", s.models_dir),
                        ("DATASETS_DIR", s.datasets_dir)):
        monkeypatch.setenv(f"TRIPSCORE_{name}", str(value))
    champion = world.trained.version
    assert main(["models", "promote", champion]) == 0
    capsys.readouterr()
    # an untrained challenger (zero iterations: every offer gets the base rate, AUC 0.5) must not replace it
    assert main(["retrain", "--events", str(world.events), "--max-iter", "0"]) == EXIT_KEPT
    outcome = json.loads(capsys.readouterr().out)  # the whole output: one JSON line
    assert {k: outcome[k] for k in ("outcome", "exit_code", "active", "challenger", "champion")} == {
        "outcome": "kept", "exit_code": EXIT_KEPT, "active": champion, "challenger": "trip_decline_risk_lr_v2",
        "champion": champion}
    assert outcome["challenger_auc"] < outcome["champion_auc"] and outcome["holdout_rows"] > 0
    assert outcome["holdout_metrics"]["auc"] == pytest.approx(0.5)
    assert active_version(s.models_dir) == champion and (s.models_dir / "trip_decline_risk_lr_v2").is_dir()
    assert main(["models", "promote", "trip_decline_risk_lr_v99"]) == 1
    assert "no export file" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"* {champion}" in listing and "  trip_decline_risk_lr_v2" in listing


def test_missing_columns_and_empty_inputs_are_clear_errors(spark, world: World, tmp_path: Path) -> None:
    s = world.settings.with_overrides(datasets_dir=tmp_path / "datasets", models_dir=tmp_path / "models")
    thin = tmp_path / "thin"
    write_events(world.city.events, thin)
    for path in thin.glob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["rating", "event_id"]), path)
    with pytest.raises(EventLogError, match="missing column.*event_id.*rating"):
        backfill(spark, s, thin, progress=False)
    with pytest.raises(EventLogError, match="no event log"):
        materialize(spark, world.store, tmp_path / "nowhere", s.datasets_dir, progress=False)
    with pytest.raises(DatasetError, match="no folder"):
        train(spark, s.datasets_dir, s.models_dir, "never-made", progress=False)

    no_offers = tmp_path / "no-offers"
    shifts = world.city.events.filter(ds.field("event_type").isin(["shift_started", "shift_ended"]))
    write_events(shifts, no_offers)
    result = materialize(spark, world.store, no_offers, s.datasets_dir, "empty", progress=False)
    assert result.rows == 0
    with pytest.raises(DatasetError, match="'empty' is empty"):
        train(spark, s.datasets_dir, s.models_dir, "empty", progress=False)

    lacking = s.datasets_dir / "lacking"
    shutil.copytree(world.settings.datasets_dir / DEFAULT_DATASET, lacking)
    for path in lacking.glob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["surge_multiplier"]), path)
    with pytest.raises(DatasetError, match="missing column.*surge_multiplier"):
        train(spark, s.datasets_dir, s.models_dir, "lacking", progress=False)
    assert not s.models_dir.exists() or not any(s.models_dir.iterdir())
