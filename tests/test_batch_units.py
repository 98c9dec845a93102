"""Batch logic without Spark: the scripted fold, point-in-time examples, labels, generator, metrics, registry."""

from __future__ import annotations

import json
import random
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from batch import metrics
from batch.eventlog import to_messages
from batch.generate import generate_city, score_requests
from batch.pointintime import (
    EXAMPLE_SCHEMA,
    PIT_COLUMNS,
    driver_examples,
    driver_record,
    driver_runs,
    offer_label,
    partition_examples,
)
from batch.retrain import EXIT_KEPT, EXIT_PROMOTED, Verdict
from features.fold import fold
from modelregistry.export import ModelError, ModelExport
from modelregistry.registry import (
    active_version,
    describe_versions,
    load_active,
    next_version,
    promote,
    staged_version,
)
from schemas.features import MODEL_FEATURES
from schemas.messages import validate_score_request, validate_trip_event

DAY0 = 19_877  # 2024-06-03 in days since the epoch
H = DAY0 * 86_400_000 + 8 * 3_600_000  # 08:00 UTC, a peak hour
MIN = 60_000
OFFER = {"pickup_eta_min": 4.0, "surge_multiplier": 1.5, "est_duration_min": 18.0, "rider_rating": 4.9}


def ev(event_id: str, minutes: float, kind: str, trip: str | None = None, rating: float | None = None,
       ts: int | None = None) -> dict:
    """One normalised event of driver d1."""
    row = {"event_id": event_id, "event_type": kind, "ts_ms": ts if ts is not None else H + int(minutes * MIN),
           "driver_id": "d1", "trip_id": trip, "rating": rating, "schema_version": 1}
    return row | (OFFER if kind == "trip_offered" else {})


SCRIPT = [
    ev("e01", 0, "shift_started"),
    ev("e02", 1, "trip_offered", "t1"),
    ev("e03", 1.5, "offer_accepted", "t1"),
    ev("e04", 20, "trip_completed", "t1"),
    ev("e05", 21, "trip_rated", "t1", rating=5.0),
    ev("e06", 25, "trip_offered", "t2"),
    ev("e07", 25.5, "offer_declined", "t2"),
    ev("e08", 30, "trip_offered", "t3"),
    ev("e09", 31, "offer_accepted", "t3"),
    ev("e10", 50, "trip_completed", "t3"),
    ev("e11", 51, "trip_rated", "t3", rating=4.0),
    ev("e12", 90, "trip_offered", "t4"),  # 39 min after e11: the streak resets when the next event applies
    ev("e13", 91, "offer_accepted", "t4"),
    ev("e14", 110, "trip_completed", "t4"),
]
LATER = [
    ev("e15", 120, "trip_offered", "t5"),
    ev("e16", 123, "offer_accepted", "t5"),  # 3 min after the offer: too late, label 1
    ev("e17", 130, "trip_offered", "t6"),  # never answered: label 1
]


def tuples(rows: list[dict]) -> list[tuple]:
    return [(r["ts_ms"], r["event_id"], r["event_type"], r["rating"]) for r in rows]


def pit_events(rows: list[dict]) -> list[tuple]:
    return [tuple(r.get(n) for n in PIT_COLUMNS[1:]) + (r.get("true_decline_p"),) for r in rows]


def examples_by_trip(rows: list[dict]) -> dict[str, dict]:
    names = EXAMPLE_SCHEMA.names[1:]
    return {example[0]: dict(zip(names, example, strict=True)) for example in driver_examples(pit_events(rows))}


def test_fold_of_a_scripted_sequence_equals_hand_computed_bins() -> None:
    shuffled = SCRIPT[:]
    random.Random(1).shuffle(shuffled)  # the fold sorts by (ts, event_id) itself
    bins = fold(tuples(shuffled)).to_bins()
    assert bins == {
        "ds_decl_rate": 0.25,  # 1 decline / (3 accepts + 1 decline)
        "ds_avg_rating": 4.5,  # (5 + 4) / 2
        "ds_total_trips": 3,
        "ds_n_accept": 3,
        "ds_n_decline": 1,
        "ds_n_rated": 2,
        "ds_rating_sum": 9.0,
        "da_trips_day": 3,
        "da_day": DAY0,
        "da_shift_start": H,
        "da_consec_trips": 1,  # e12 came 39 min after e11: reset, then e14
        "da_accept_1h": 1.0,  # only e13 lies within 60 min of e14
        "da_resp_1h": [H + 91 * MIN, 1],
        "_event_ms": H + 110 * MIN,
        "_n_events": 14,
    }
    assert driver_record("d1", tuples(shuffled)) == ("d1", bins)


def test_point_in_time_examples_equal_hand_computed_features() -> None:
    examples = examples_by_trip(SCRIPT + LATER)
    assert set(examples) == {"t1", "t2", "t3", "t4", "t5", "t6"}
    first = examples["t1"]  # only shift_started before it: no response, no rating yet
    assert np.array_equal([first[n] for n in MODEL_FEATURES],
                          [np.nan, np.nan, 0.0, 1 / 60, 0.0, np.nan, 0.0, 4.0, 4.9, 1.5, 18.0, 1.0], equal_nan=True)
    t2 = examples["t2"]  # after e05: 1 accept, rating 5, 1 trip
    assert [t2[n] for n in MODEL_FEATURES] == [0.0, 5.0, 1.0, 25 / 60, 1.0, 1.0, 1.0, 4.0, 4.9, 1.5, 18.0, 1.0]
    t4 = examples["t4"]  # after e11 (the offer's own streak reset is not applied yet)
    assert [t4[n] for n in MODEL_FEATURES] == [1 / 3, 4.5, 2.0, 1.5, 2.0, 2 / 3, 2.0, 4.0, 4.9, 1.5, 18.0, 1.0]
    assert t4["offer_ts_ms"] == H + 90 * MIN
    labels = {trip: row["label"] for trip, row in examples.items()}
    assert labels == {"t1": 0, "t2": 1, "t3": 0, "t4": 0, "t5": 1, "t6": 1}


def test_an_event_planted_after_an_offer_never_reaches_its_example() -> None:
    offer_ts = H + 90 * MIN
    planted = [
        ev("e12z", 0, "offer_declined", "tx", ts=offer_ts),  # same ms, later in the fold order
        ev("p1", 0, "trip_rated", "t3", rating=1.0, ts=offer_ts + 1),
        ev("p2", 0, "shift_ended", ts=offer_ts + 2),
        ev("p3", 0, "trip_completed", "tx", ts=offer_ts + 3),
    ]
    clean = examples_by_trip(SCRIPT)["t4"]
    dirty = examples_by_trip(SCRIPT + planted)["t4"]
    assert [dirty[n] for n in MODEL_FEATURES] == [clean[n] for n in MODEL_FEATURES]
    later = examples_by_trip(SCRIPT + planted + LATER)["t5"]  # ...but the next offer does see them
    assert later["avg_rating"] == pytest.approx(10 / 3) and later["hours_on_shift"] == 0.0


@pytest.mark.parametrize(
    ("responses", "label"),
    [
        ([], 1),
        ([(1_000, "offer_accepted")], 0),
        ([(1_000, "offer_declined")], 1),
        ([(120_000, "offer_accepted")], 0),  # exactly 120 s still counts
        ([(120_001, "offer_accepted")], 1),
        ([(-5, "offer_declined"), (50, "offer_accepted")], 0),  # a response before the offer is ignored
        ([(10, "offer_declined"), (20, "offer_accepted")], 1),  # the first response decides
    ],
)
def test_offer_label_follows_spec_3_3(responses: list[tuple[int, str]], label: int) -> None:
    assert offer_label(0, responses) == label


def test_the_generator_is_deterministic_and_obeys_the_contract() -> None:
    city = generate_city(seed=3, drivers=40, days=3, workers=1)
    again = generate_city(seed=3, drivers=40, days=3, workers=2)
    assert city.events.equals(again.events)
    assert np.array_equal(city.labels, again.labels) and np.array_equal(city.true_p, again.true_p)
    assert not city.events.equals(generate_city(seed=4, drivers=40, days=3, workers=1).events)
    problems = [p for m in to_messages(city.events) for p in validate_trip_event(m)[1]]
    assert problems == []
    kinds = set(city.events.column("event_type").to_pylist())
    assert kinds == {"shift_started", "shift_ended", "trip_offered", "offer_accepted", "offer_declined",
                     "trip_completed", "trip_rated"}
    assert city.offers == city.events.column("true_decline_p").drop_null().length()
    assert 0.6 < city.oracle_auc < 0.95


def test_driver_runs_follow_drivers_across_batches() -> None:
    batch = pa.RecordBatch.from_pydict({"driver_id": ["a", "a", "b", "c", "c"], "x": [1, 2, 3, 4, 5]})
    runs = list(driver_runs([batch.slice(0, 1), batch.slice(1, 3), batch.slice(0, 0), batch.slice(4)]))
    assert runs == [("a", [(1,), (2,)]), ("b", [(3,)]), ("c", [(4,), (5,)])]


def test_generator_truth_matches_the_materialized_labels_and_features() -> None:
    city = generate_city(seed=5, drivers=5, days=3, workers=1)
    events = city.events.sort_by([("driver_id", "ascending"), ("ts_ms", "ascending"), ("event_id", "ascending")])
    batches = events.select([*PIT_COLUMNS, "true_decline_p"]).to_batches(max_chunksize=97)
    examples = pa.Table.from_batches(list(partition_examples(batches, has_truth=True))).to_pylist()
    assert len(examples) == city.offers
    assert sum(e["label"] for e in examples) == int(city.labels.sum())
    assert sorted(e["true_decline_p"] for e in examples) == sorted(city.true_p.tolist())


def test_score_requests_obey_the_contract() -> None:
    city = generate_city(seed=3, drivers=60, days=1, workers=1)
    requests = score_requests(city.driver_ids, 30, seed=2, start_ms=city.end_ms, candidates=(10, 50))
    assert len({r["request_id"] for r in requests}) == 30
    for request in requests:
        normalised, problems = validate_score_request(json.loads(json.dumps(request)))
        assert problems == [] and 10 <= len(normalised["candidates"]) <= 50


def test_metrics_agree_with_brute_force() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)  # many ties
    pairs = [(i, j) for i, j in combinations(range(300), 2) if y[i] != y[j]]
    wins = sum(1.0 if p[a] > p[b] else 0.5 if p[a] == p[b] else 0.0
               for i, j in pairs for a, b in [(i, j) if y[i] == 1 else (j, i)])
    assert metrics.roc_auc(y, p) == pytest.approx(wins / len(pairs))
    fpr, tpr = metrics.roc_curve(y, p)
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.roc_auc(y, p))
    assert metrics.pr_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.log_loss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
    calibration = metrics.calibration(y, p)
    assert sum(b["count"] for b in calibration) == 300 and len(calibration) == 10
    histogram = metrics.score_histogram(p)
    assert len(histogram["edges"]) == 21 and sum(histogram["fractions"]) == pytest.approx(1.0)


def _export(version: str, coefficient: float = 1.0) -> ModelExport:
    n = len(MODEL_FEATURES)
    return ModelExport(version, list(MODEL_FEATURES), [coefficient] * n, 0.0, [0.0] * n, [1.0] * n, 0.4, "ds",
                       "2024-06-03T00:00:00+00:00", {"auc": 0.7}, {})


def _save_version(models_dir: Path, coefficient: float = 1.0) -> str:
    with staged_version(models_dir) as (version, folder):
        _export(version, coefficient).save(folder)
    return version


def test_promote_and_active_semantics(tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert active_version(models) is None and load_active(models) is None
    assert next_version(models) == "trip_decline_risk_lr_v1"
    v1, v2 = _save_version(models), _save_version(models, 2.0)
    assert (v1, v2) == ("trip_decline_risk_lr_v1", "trip_decline_risk_lr_v2")
    assert active_version(models) is None  # training never promotes by itself
    promote(models, v2)
    assert active_version(models) == v2 and load_active(models).coefficients[0] == 2.0
    promote(models, v1)
    assert (models / "ACTIVE").read_text().strip() == v1
    with pytest.raises(ModelError, match="no export file"):
        promote(models, "trip_decline_risk_lr_v9")
    with pytest.raises(ModelError, match="not a model version"):
        promote(models, "../elsewhere")
    assert active_version(models) == v1  # a failed promote leaves ACTIVE alone
    assert [(r["version"], r["active"]) for r in describe_versions(models)] == [(v1, True), (v2, False)]


def test_a_failed_training_leaves_no_version_folder(tmp_path: Path) -> None:
    models = tmp_path / "models"
    with pytest.raises(RuntimeError), staged_version(models) as (_, folder):
        (folder / "half-written").write_text("x")
        raise RuntimeError("boom")
    assert list(models.iterdir()) == [] and next_version(models) == "trip_decline_risk_lr_v1"


def test_a_corrupt_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    models = tmp_path / "models"
    good = _save_version(models)
    bad = _save_version(models)
    (models / bad / "export.json").write_text('{"version": "x", "feature_order": [')
    with pytest.raises(ModelError, match="corrupt export"):
        promote(models, bad)
    partial = json.loads((models / good / "export.json").read_text())
    partial["coefficients"] = partial["coefficients"][:3]
    (models / good / "export.json").write_text(json.dumps(partial))
    with pytest.raises(ModelError, match="coefficients has 3 values"):
        promote(models, good)
    partial["coefficients"] = [float("nan")] * len(partial["feature_order"])  # Python's json writes and reads NaN
    (models / good / "export.json").write_text(json.dumps(partial))
    with pytest.raises(ModelError, match="coefficients has a NaN"):
        promote(models, good)
    assert all("error" in row for row in describe_versions(models))


@pytest.mark.parametrize(
    ("challenger_auc", "champion", "champion_auc", "promoted"),
    [(0.70, None, None, True), (0.70, "v1", 0.70, True), (0.71, "v1", 0.70, True), (0.69, "v1", 0.70, False)],
)
def test_a_challenger_is_promoted_when_at_least_as_good(challenger_auc: float, champion: str | None,
                                                        champion_auc: float | None, promoted: bool) -> None:
    verdict = Verdict("v2", challenger_auc, champion, champion_auc, 1_000)
    assert verdict.promote is promoted
    assert verdict.exit_code == (EXIT_PROMOTED if promoted else EXIT_KEPT)
    assert verdict.line().startswith("retrain: promoted v2" if promoted else "retrain: kept v1")
    outcome = verdict.outcome("ds", {"auc": challenger_auc, "calibration": [], "train_rows": 9})
    assert (outcome["outcome"], outcome["exit_code"], outcome["active"]) == (
        ("promoted", EXIT_PROMOTED, "v2") if promoted else ("kept", EXIT_KEPT, "v1"))
    assert outcome["holdout_metrics"] == {"auc": challenger_auc, "train_rows": 9}
