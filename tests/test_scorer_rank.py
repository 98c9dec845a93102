"""The scorer's pure core and its helpers, without Kafka: ranking, fallbacks, deadline, reload, drift."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from scorer_helpers import HISTOGRAM, PRIOR, TS_MS, driver_record, expected_risk, make_model, save_model, score_request

from features.derive import STORED_COLUMNS
from featurestore.base import FeatureMatrix, FeatureRow, OnlineStore, StoreError, records_matrix
from featurestore.sqlite import SQLiteStore
from runtime.config import Settings
from schemas.messages import decode_score_request, encode
from scorer.drift import DriftMonitor, psi, training_bins
from scorer.metrics import FOLD_EVERY, ArrayHistogram
from scorer.model_watch import ActiveModel
from scorer.rank import NO_FEATURES, NO_MODEL, STORE_ERROR, STORE_TIMEOUT, Policy, rank_request
from scorer.reader import FeatureReader, read_features
from scorer.service import Incoming, Origin, Scorer

POLICY = Policy(redispatch_penalty_min=5.0, max_feature_age_ms=86_400_000)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    with SQLiteStore(tmp_path / "features.db") as opened:
        opened.write([driver_record("a", 0.9), driver_record("b", 0.1), driver_record("c", 0.0),
                      driver_record("old", 0.0, event_ms=TS_MS - 2 * 86_400_000),
                      driver_record("part", 0.5, ds_avg_rating=None)])
        yield opened


def ranked(candidates: list[tuple[str, float]], store: OnlineStore, model=None, rows=None):
    request, problems = decode_score_request(encode(score_request("r1", candidates)))
    assert not problems
    rows = rows if rows is not None else store.read_matrix([d for d, _ in candidates], STORED_COLUMNS)
    return rank_request(request, rows, model if model is not None else make_model("v1"), POLICY)


def test_ranks_by_expected_cost_on_known_features(store):
    ranking = ranked([("a", 2.0), ("b", 3.0), ("c", 4.0)], store)
    assert ranking.strategy == "model" and ranking.reason is None
    assert [c["driver_id"] for c in ranking.ranked] == ["b", "c", "a"]
    for entry, rate, eta in zip(ranking.ranked, (0.1, 0.0, 0.9), (3.0, 4.0, 2.0), strict=True):
        assert entry["decline_risk"] == pytest.approx(expected_risk(rate), abs=1e-12)
        assert entry["expected_cost_min"] == pytest.approx(eta + 5.0 * expected_risk(rate), abs=1e-12)
        assert entry["feature_status"] == "present"
    assert [c["rank"] for c in ranking.ranked] == [1, 2, 3]


def test_missing_and_stale_candidates_get_the_prior(store):
    ranking = ranked([("a", 2.0), ("ghost", 1.0), ("old", 1.5)], store)
    by_id = {c["driver_id"]: c for c in ranking.ranked}
    assert ranking.strategy == "model"
    assert by_id["ghost"]["feature_status"] == "missing" and by_id["ghost"]["decline_risk"] == PRIOR
    assert by_id["old"]["feature_status"] == "stale" and by_id["old"]["decline_risk"] == PRIOR
    assert by_id["ghost"]["expected_cost_min"] == pytest.approx(1.0 + 5.0 * PRIOR)
    assert [c["driver_id"] for c in ranking.ranked] == ["ghost", "old", "a"]
    assert ranking.risks.shape == (1,)


def test_partial_record_is_scored_with_imputation(store):
    by_id = {c["driver_id"]: c for c in ranked([("part", 2.0), ("b", 3.0)], store).ranked}
    assert by_id["part"]["feature_status"] == "partial"
    assert by_id["part"]["decline_risk"] == pytest.approx(expected_risk(0.5), abs=1e-12)


def test_ties_break_by_eta_then_driver_id(store):
    ranking = ranked([("z2", 3.0), ("z1", 3.0), ("a", 2.0), ("ghost", 2.0)], store,
                     model=make_model("v1", decline_weight=0.0))
    # decline_weight 0 gives every scored candidate sigmoid(-2); the unknown ones get the prior
    costs = [c["expected_cost_min"] for c in ranking.ranked]
    assert costs == sorted(costs)
    assert [c["driver_id"] for c in ranking.ranked] == ["a", "ghost", "z1", "z2"]


RECORDS = {"none": None, "low": driver_record("x", 0.1)[1], "high": driver_record("x", 0.6)[1],
           "stale": driver_record("x", 0.1, event_ms=TS_MS - 2 * 86_400_000)[1]}


@given(st.lists(st.tuples(st.sampled_from([1.0, 2.0, 2.5]), st.sampled_from(sorted(RECORDS))), min_size=1,
                max_size=12),
       st.sampled_from([0.0, 1.0]), st.randoms(use_true_random=False))
@example([(2.0, "low"), (2.0, "low"), (1.0, "high")], 1.0, None)  # equal costs and etas: driver_id decides
def test_ranked_in_cost_then_eta_then_driver_id_order(drawn, decline_weight, shuffle):
    """Every candidate ranked once, ranks 1..n, in (cost, eta, driver_id) order, with costs equal often."""
    ids = [f"d{len(drawn) - i:02d}" for i in range(len(drawn))]  # ids against the order of positions
    if shuffle is not None:
        shuffle.shuffle(ids)
    candidates = [(driver_id, eta) for driver_id, (eta, _) in zip(ids, drawn, strict=True)]
    rows = records_matrix([RECORDS[kind] for _, kind in drawn], STORED_COLUMNS, TS_MS)
    ranking = ranked(candidates, None, make_model("v1", decline_weight=decline_weight), rows)
    keys = [(c["expected_cost_min"], c["pickup_eta_min"], c["driver_id"]) for c in ranking.ranked]
    assert keys == sorted(keys)
    assert sorted(c["driver_id"] for c in ranking.ranked) == sorted(ids)
    assert [c["rank"] for c in ranking.ranked] == list(range(1, len(ids) + 1))


def test_all_missing_gives_distance_only(store):
    ranking = ranked([("x", 3.0), ("y", 1.0), ("old", 2.0)], store)
    assert (ranking.strategy, ranking.reason) == ("distance_only", NO_FEATURES)
    assert [(c["driver_id"], c["decline_risk"], c["expected_cost_min"]) for c in ranking.ranked] == [
        ("y", None, 1.0), ("old", None, 2.0), ("x", None, 3.0)]
    assert [c["feature_status"] for c in ranking.ranked] == ["missing", "stale", "missing"]


@pytest.mark.parametrize("reason", [STORE_ERROR, STORE_TIMEOUT])
def test_store_failure_gives_distance_only(store, reason):
    ranking = ranked([("a", 2.0), ("b", 1.0)], store, rows=reason)
    assert (ranking.strategy, ranking.reason) == ("distance_only", reason)
    assert [c["driver_id"] for c in ranking.ranked] == ["b", "a"]


def test_no_model_gives_distance_only(store):
    request, _ = decode_score_request(encode(score_request("r1", [("a", 2.0), ("b", 1.0)])))
    ranking = rank_request(request, store.read_matrix(["a", "b"], STORED_COLUMNS), None, POLICY)
    assert (ranking.strategy, ranking.reason) == ("distance_only", NO_MODEL)
    assert [c["feature_status"] for c in ranking.ranked] == ["present", "present"]


def test_same_request_and_state_give_the_same_ranking(store):
    candidates = [(d, 2.0 + i / 3) for i, d in enumerate(["a", "b", "c", "ghost", "old", "part"])]
    assert ranked(candidates, store).ranked == ranked(candidates, store).ranked


class FakeStore(OnlineStore):
    """A store whose reads raise, stall, hang (`freeze`) or return given records: the isolated failure modes of the
    feature read."""

    backend = "fake"
    FROZEN_S = 60.0  # a frozen read returns after this at the latest: far beyond every deadline tested

    def __init__(self, sleep_s: float = 0.0, fail: bool = False, records: dict | None = None) -> None:
        self.sleep_s, self.fail, self.records = sleep_s, fail, records or {}
        self.reads = 0
        self._thawed = threading.Event()
        self._thawed.set()

    def freeze(self) -> None:
        """Reads from now on hang until `thaw`."""
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    def read(self, entity_ids, bins):
        self.reads += 1
        self._thawed.wait(self.FROZEN_S)
        time.sleep(self.sleep_s)
        if self.fail:
            raise StoreError("boom")
        return [FeatureRow(e, self.records.get(e), tuple(bins), TS_MS) for e in entity_ids]

    def write(self, records):
        raise NotImplementedError

    def read_current(self, entity_ids):
        raise NotImplementedError

    def compare_and_set(self, updates):
        raise NotImplementedError

    def delete(self, entity_ids):
        raise NotImplementedError

    def health(self):
        return {"ok": not self.fail, "backend": self.backend}

    def info(self):
        raise NotImplementedError

    def put_metadata(self, set_name, key, record):
        raise NotImplementedError

    def get_metadata(self, set_name, key):
        return None

    def scan_metadata(self, set_name):
        return []


@pytest.mark.parametrize("mode", ["executor", "inline"])
def test_store_errors_and_deadline_fall_back_within_budget(mode):
    async def read(store: FakeStore, freeze: bool = False) -> tuple[object, float]:
        reader = FeatureReader(store, deadline_ms=20, mode=mode)
        if freeze:
            store.freeze()  # after the pool's warm-up reads
        started = time.perf_counter()
        result = await reader.read(["a", "b"])
        elapsed = time.perf_counter() - started
        store.thaw()
        reader.close()
        return result, elapsed

    assert asyncio.run(read(FakeStore(fail=True)))[0] == STORE_ERROR
    result, elapsed = asyncio.run(read(FakeStore(sleep_s=0.2), freeze=mode == "executor"))
    assert result == STORE_TIMEOUT  # inline: the read took 0.2 s, past the deadline
    if mode == "executor":  # the loop is not blocked: the answer comes at the deadline, not when the frozen read ends
        assert elapsed < FakeStore.FROZEN_S / 10, elapsed
    assert isinstance(read_features(FakeStore(), ["a"], 1.0), FeatureMatrix)


def test_a_request_waiting_behind_a_frozen_read_has_only_the_rest_of_its_deadline(tmp_path):
    """Every request gets at most the deadline of store waiting, counted from its arrival: the read it waited behind
    counts too. A frozen store costs each request the deadline once, not once per batch ahead of it."""
    save_model(tmp_path / "models", make_model("trip_decline_risk_lr_v1"))
    store = FakeStore(records=dict([driver_record("a", 0.9)]))
    scorer = Scorer(settings_for(tmp_path, store_deadline_ms=1_000, scorer_read_mode="executor"), store)
    deadline_s = scorer.reader.deadline_s
    store.freeze()
    store.reads = 0  # not the pool's warm-up reads

    async def answer(request_id: str, arrived: float) -> tuple[dict, float]:
        raw = encode(score_request(request_id, [("a", 1.0)]))
        started = time.monotonic()
        [[response]] = await scorer.handle_batch([Incoming(raw, None, Origin("score-requests", 0, 0), arrived)])
        return json.loads(response.value), time.monotonic() - started

    async def run() -> None:
        first_arrived = time.monotonic()
        first, _ = await answer("first", first_arrived)  # its read hangs: it falls back at the deadline
        first_done = time.monotonic()
        assert (first["reason"], store.reads) == (STORE_TIMEOUT, 1)
        behind, waited_s = await answer("behind", first_arrived)  # arrived with it, waited behind all of its read
        assert (behind["reason"], store.reads) == (STORE_TIMEOUT, 1), "read again past its deadline"
        assert waited_s < deadline_s / 2, waited_s  # nothing left to wait: answered at once
        midway, waited_s = await answer("midway", first_done - deadline_s / 2)  # waited behind half of it
        assert (midway["reason"], store.reads) == (STORE_TIMEOUT, 2)
        assert waited_s < deadline_s * 0.8, waited_s  # the half of the deadline left (0.5 s), not all of it
        assert scorer.reader.budget(time.monotonic()) == deadline_s  # a request arriving now has all of it

    try:
        asyncio.run(run())
    finally:
        store.thaw()
        scorer.close()


def settings_for(tmp_path: Path, **overrides) -> Settings:
    return Settings(home=tmp_path, models_dir=tmp_path / "models", sqlite_path=tmp_path / "features.db",
                    **overrides)


def test_service_answers_slow_store_distance_only_and_malformed_with_error(tmp_path):
    save_model(tmp_path / "models", make_model("trip_decline_risk_lr_v1"))
    store = FakeStore()
    scorer = Scorer(settings_for(tmp_path), store)
    store.freeze()
    origin = Origin("score-requests", 0, 7)

    async def run():
        started = time.perf_counter()
        [good] = await scorer.handle(encode(score_request("ok-1", [("a", 2.0), ("b", 1.0)])), b"ok-1", origin)
        elapsed = time.perf_counter() - started
        bad = await scorer.handle(json.dumps({"request_id": "bad-1", "ts": "yesterday"}).encode(), b"k", origin)
        garbage = await scorer.handle(b"\xff not json", b"kafka-key", origin)
        return good, elapsed, bad, garbage

    good, elapsed, bad, garbage = asyncio.run(run())
    store.thaw()
    scorer.close()
    response = json.loads(good.value)
    assert (response["strategy"], response["reason"]) == ("distance_only", STORE_TIMEOUT)
    assert response["model_version"] == "trip_decline_risk_lr_v1" and good.key == b"ok-1"
    assert elapsed < FakeStore.FROZEN_S / 10, elapsed  # at the 20 ms deadline, not when the frozen read ends
    assert [o.topic for o in bad] == ["risk-scores", "trip-events-dlq"]
    error = json.loads(bad[0].value)
    assert (error["request_id"], error["strategy"], bad[0].key) == ("bad-1", "error", b"bad-1")
    assert "ts" in error["reason"] and "candidates: is required" in error["reason"]
    letter = json.loads(bad[1].value)
    assert (letter["stage"], letter["topic"], letter["partition"], letter["offset"]) == ("score", "score-requests",
                                                                                          0, 7)
    assert json.loads(garbage[0].value)["request_id"] == "kafka-key" and garbage[1].key == b"kafka-key"


def test_a_batch_with_a_corrupt_record_answers_that_request_distance_only_and_the_others_as_alone(tmp_path):
    save_model(tmp_path / "models", make_model("trip_decline_risk_lr_v1"))
    records = dict([driver_record("a", 0.9), driver_record("b", 0.1), driver_record("bad", 0.5, _event_ms="never")])
    scorer = Scorer(settings_for(tmp_path, store_deadline_ms=60_000), FakeStore(records=records))
    origin = Origin("score-requests", 0, 7)
    requests = [score_request("r1", [("a", 2.0), ("b", 1.0)]), score_request("r2", [("bad", 1.0), ("a", 3.0)]),
                score_request("r3", [("b", 2.0)])]
    inputs = [Incoming(encode(request), request["request_id"].encode(), origin) for request in requests]

    together = asyncio.run(scorer.handle_batch(inputs))
    alone = [asyncio.run(scorer.handle(*incoming)) for incoming in inputs]
    scorer.close()
    answers = [json.loads(outs[0].value) for outs in together]
    assert [len(outs) for outs in together] == [1, 1, 1]
    assert [(a["strategy"], a["reason"]) for a in answers] == [("model", None), ("distance_only", "scorer_error"),
                                                               ("model", None)]
    assert [a["ranked"] for a in answers] == [json.loads(outs[0].value)["ranked"] for outs in alone]


def test_active_model_switches_and_keeps_serving_through_a_corrupt_promotion(tmp_path, caplog):
    models = tmp_path / "models"
    models.mkdir()
    active = ActiveModel(models)
    assert active.model is None and not active.refresh()
    save_model(models, make_model("trip_decline_risk_lr_v1"))
    assert active.refresh() and active.version == "trip_decline_risk_lr_v1"
    save_model(models, make_model("trip_decline_risk_lr_v2"))
    assert active.refresh() and active.version == "trip_decline_risk_lr_v2"
    (models / "trip_decline_risk_lr_v3").mkdir()
    (models / "trip_decline_risk_lr_v3" / "export.json").write_text("{not json")
    (models / "ACTIVE").write_text("trip_decline_risk_lr_v3\n")
    assert not active.refresh() and active.version == "trip_decline_risk_lr_v2"
    assert "trip_decline_risk_lr_v3 cannot be served" in caplog.text
    caplog.clear()
    assert not active.refresh() and not caplog.text  # logged once, not every poll
    (models / "ACTIVE").unlink()
    assert not active.refresh() and active.version == "trip_decline_risk_lr_v2"


def test_psi_of_identical_distributions_is_zero_and_grows_with_shift():
    monitor = DriftMonitor(HISTOGRAM)
    edges, counts = training_bins(HISTOGRAM)
    centres = (edges[:-1] + edges[1:]) / 2
    monitor.observe(np.repeat(centres, counts.astype(int) * 10))
    assert monitor.psi() == pytest.approx(0.0, abs=1e-12)
    monitor.observe(np.full(2000, 0.95))
    assert monitor.psi() > 0.25
    assert math.isnan(DriftMonitor({}).psi()) and training_bins({"edges": [0, 1], "counts": [1, 2]}) is None
    assert math.isnan(psi(np.zeros(3), np.ones(3)))
    assert monitor.plot_png("v").startswith(b"\x89PNG")


def test_buffered_histograms_and_drift_count_every_observation_once():
    """Observations are buffered and folded in bulk (every FOLD_EVERY requests, and whenever read): none is lost
    or counted twice across folds."""
    registry = CollectorRegistry()
    ages = ArrayHistogram("ages_seconds", "ages", (1, 10, 100), registry, scale=0.001)
    rng = np.random.default_rng(3)
    arrays = [rng.integers(-500, 200_000, size=rng.integers(0, 60)).tolist() for _ in range(3 * FOLD_EVERY + 7)]
    scalars = rng.uniform(0, 150, size=FOLD_EVERY + 3).tolist()
    for values in arrays:
        ages.observe_many(values)
    for value in scalars:
        ages.observe(value * 1000)
    seconds = np.maximum(np.concatenate([np.concatenate(arrays), np.asarray(scalars) * 1000]), 0) / 1000
    family = next(iter(ages.collect()))
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets == {"1.0": (seconds <= 1).sum(), "10.0": (seconds <= 10).sum(), "100.0": (seconds <= 100).sum(),
                       "+Inf": len(seconds)}
    assert next(iter(ages.collect())).samples == family.samples  # collecting again folds nothing new
    monitor, whole = DriftMonitor(HISTOGRAM), DriftMonitor(HISTOGRAM)
    risks = [rng.uniform(0, 1, 50) for _ in range(FOLD_EVERY + 1)]
    for values in risks:
        monitor.observe(values)
    whole.observe(np.concatenate(risks))
    assert monitor.live.tolist() == whole.live.tolist() and monitor.live.sum() == 50 * len(risks)
