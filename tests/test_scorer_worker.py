"""The scorer end to end: a real broker, a real Faust worker subprocess, a SQLite store file."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from kafka import KafkaProducer
from scorer_helpers import PRIOR, driver_record, expected_risk, make_model, save_model, score_request
from strategies import raw_messages, score_request_values
from topic_reader import read_topic

from clients import BlockingRiskScoreClient
from features.derive import STORED_COLUMNS
from featurestore.sqlite import SQLiteStore
from runtime.config import Settings
from runtime.kafka_clients import producer_options
from runtime.topics import admin_client, count_topic, create_topics
from schemas.messages import decode_score_request, encode
from scorer.harness import WorkerProcess, free_port
from scorer.rank import Policy, rank_request

pytestmark = pytest.mark.kafka
RESTART_SESSION_TIMEOUT_S = 45.0  # far longer than a worker takes to start, even on a slow and busy machine
V1, V2, V3 = (f"trip_decline_risk_lr_v{n}" for n in (1, 2, 3))


class Deployment:
    """Unique topics and consumer group, a store file, a models folder, a worker and a risk-score client."""

    def __init__(self, kafka: Settings, root: Path, instance_id: str | None = None, start: bool = True,
                 **settings: object) -> None:
        tag = uuid.uuid4().hex[:8]
        self.kafka, self.root = kafka, root
        self.topics = {name: f"{name}-{tag}" for name in ("score-requests", "risk-scores", "score-dlq")}
        create_topics(kafka, self.topics.values(), partitions=4)
        self.models = root / "models"
        self.models.mkdir()
        with SQLiteStore(root / "features.db") as store:
            store.write([driver_record("a", 0.9), driver_record("b", 0.1), driver_record("c", 0.0)])
        self.settings = {
            **{name: value for name, value in dataclasses.asdict(kafka).items() if name.startswith("kafka_")},
            "home": root, "sqlite_path": root / "features.db", "models_dir": self.models,
            "topic_score_requests": self.topics["score-requests"], "topic_risk_scores": self.topics["risk-scores"],
            "topic_score_dlq": self.topics["score-dlq"], "scorer_app_id": f"scorer-test-{tag}", "model_poll_s": 0.2,
            "scorer_instance_id": f"worker-{tag}" if instance_id is None else instance_id,
            # these tests check answers, not latency: a busy machine must not turn a model answer into a deadline
            # fallback (the deadline itself is tested in test_scorer_rank.py)
            "store_deadline_ms": 60_000, **settings,
        }
        self.web_port = free_port()  # kept across restarts: static membership hands back the old member's metadata
        self.producer = KafkaProducer(**producer_options(kafka), linger_ms=0)  # for what no client of ours sends
        self.duplicates: list[dict] = []
        self.client = BlockingRiskScoreClient(kafka.with_overrides(topic_score_requests=self.topics["score-requests"],
                                                                   topic_risk_scores=self.topics["risk-scores"]),
                                              on_duplicate=self.duplicates.append)
        self.worker = self.start_worker() if start else None

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self.settings, self.root / "worker.log", self.web_port).start()
        worker.wait_ready()
        return worker

    def send_raw(self, value: bytes, key: str) -> None:
        """Send bytes as they are: what no client of ours would send."""
        self.producer.send(self.topics["score-requests"], key=key.encode(), value=value)

    def ask(self, request: dict, timeout: float = 30.0) -> dict:
        return self.client.score(request, timeout)

    def serve(self, version: str, **model_args) -> None:
        """Promote `version` (saved from `make_model`) and wait until responses carry it."""
        save_model(self.models, make_model(version, **model_args))
        self.wait_for_model(version)

    def wait_for_model(self, version: str, timeout: float = 60.0) -> dict:
        """The first answer that carries `version`, asking again until one does."""
        deadline = time.monotonic() + timeout
        while (answer := self.ask(score_request(f"probe-{uuid.uuid4().hex[:8]}", [("a", 1.0)])))[
                "model_version"] != version:
            assert time.monotonic() < deadline, f"worker never switched to {version}"
            time.sleep(0.1)
        return answer

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.producer.close()
        self.client.close()
        with admin_client(self.kafka) as admin:
            admin.delete_topics(list(self.topics.values()), raise_errors=False)


@pytest.fixture(scope="module")
def deployment(kafka_settings, tmp_path_factory):
    deployed = Deployment(kafka_settings, tmp_path_factory.mktemp("scorer"))
    yield deployed
    deployed.close()


def test_no_model_then_hot_reload_switches_model_version(deployment):
    """Runs first: the worker starts with an empty models folder."""
    response = deployment.ask(score_request("no-model", [("a", 2.0), ("b", 1.0)]))
    assert (response["strategy"], response["reason"], response["model_version"]) == ("distance_only", "no_model",
                                                                                     None)
    assert [c["driver_id"] for c in response["ranked"]] == ["b", "a"]
    deployment.serve(V1)

    sent_at: dict[str, float] = {}
    pending: dict[str, concurrent.futures.Future] = {}
    for i in range(150):
        request = score_request(f"reload-{i}", [("a", 2.0), ("b", 3.0)])
        sent_at[request["request_id"]] = time.perf_counter()
        pending[request["request_id"]] = deployment.client.submit(request)
        if i == 50:
            assert all(future.result() for future in pending.values())
            save_model(deployment.models, make_model(V2, decline_weight=1.0))
        time.sleep(0.01)
    v2 = deployment.wait_for_model(V2)  # the worker polls the registry on its own clock: however long it takes
    versions = {rid: future.result()["model_version"] for rid, future in pending.items()}
    assert all(versions[f"reload-{i}"] == V1 for i in range(51)), versions
    # once an answer carried V2, every request sent after it gets V2: the switch is for good (ordering, not speed)
    switched = min([deployment.client.received_at(rid) for rid, version in versions.items() if version == V2],
                   default=deployment.client.received_at(v2["request_id"]))
    assert all(versions[rid] == V2 for rid, at in sent_at.items() if at > switched), versions
    assert {c["driver_id"]: c["decline_risk"] for c in v2["ranked"]}["a"] == pytest.approx(expected_risk(0.9, 1.0))

    (deployment.models / V3).mkdir()
    (deployment.models / V3 / "export.json").write_text('{"version": "broken"')
    (deployment.models / "ACTIVE").write_text(V3 + "\n")
    deployment.worker.wait_until(lambda: "trip_decline_risk_lr_v3 cannot be served" in
                                 (deployment.root / "worker.log").read_text(), "the corrupt model refused", 60)
    assert deployment.ask(score_request("after-corrupt", [("a", 1.0)]))["model_version"] == V2


def test_ranking_through_kafka_on_known_features(deployment):
    deployment.serve(V1)
    request = score_request("rank-1", [("a", 2.0), ("b", 3.0), ("c", 4.0), ("ghost", 1.0)])
    response = deployment.ask(request)
    assert (response["strategy"], response["reason"], response["model_version"]) == ("model", None, V1)
    assert [c["driver_id"] for c in response["ranked"]] == ["ghost", "b", "c", "a"]
    by_id = {c["driver_id"]: c for c in response["ranked"]}
    assert (by_id["ghost"]["decline_risk"], by_id["ghost"]["feature_status"]) == (PRIOR, "missing")
    assert by_id["b"]["decline_risk"] == pytest.approx(expected_risk(0.1), abs=1e-12)
    assert by_id["b"]["feature_status"] == "present"
    assert set(response["timings_ms"]) == {"features", "model", "total"}

    # the worker's answer is the pure core's answer on the same state
    decoded, _ = decode_score_request(encode(request))
    with SQLiteStore(deployment.root / "features.db") as store:
        read = store.read_matrix(["a", "b", "c", "ghost"], STORED_COLUMNS)
    assert rank_request(decoded, read, make_model(V1), Policy()).ranked == response["ranked"]

    unknown = deployment.ask(score_request("rank-2", [("x1", 3.0), ("x2", 1.0)]))
    assert (unknown["strategy"], unknown["reason"]) == ("distance_only", "no_features")
    assert [(c["driver_id"], c["decline_risk"], c["feature_status"]) for c in unknown["ranked"]] == [
        ("x2", None, "missing"), ("x1", None, "missing")]


def test_malformed_requests_get_error_responses_and_dead_letters(deployment):
    bad = {
        "bad-json": b"{not json",
        "bad-fields": encode({"request_id": "bad-fields", "ts": "noon", "candidates": []}),
        "bad-dup": encode(score_request("bad-dup", [("a", 1.0), ("a", 2.0)])),
    }
    expected = {key: deployment.client.expect(key) for key in bad}
    for key, value in bad.items():
        deployment.send_raw(value, key)
    deployment.producer.flush()
    good = deployment.ask(score_request("after-bad", [("a", 1.0)]))
    assert good["strategy"] in ("model", "distance_only")
    errors = {key: future.result() for key, future in expected.items()}
    assert {k: v["strategy"] for k, v in errors.items()} == dict.fromkeys(bad, "error")
    assert "not valid JSON" in errors["bad-json"]["reason"]
    assert "ts:" in errors["bad-fields"]["reason"] and "candidates:" in errors["bad-fields"]["reason"]
    assert "duplicate candidate" in errors["bad-dup"]["reason"]
    letters = read_topic(deployment.kafka, deployment.topics["score-dlq"], len(bad))
    assert {key.decode() for key, _ in letters} == set(bad)
    for _, letter in letters:
        assert letter["stage"] == "score" and letter["topic"] == deployment.topics["score-requests"]
        assert isinstance(letter["offset"], int) and letter["error"]


def test_metrics_and_health(deployment):
    deployment.serve(V1)
    deployment.ask(score_request("metrics-1", [("a", 2.0), ("ghost", 1.0)]))
    health = deployment.worker.health()
    assert health["status"] == "ok" and health["model_version"] == V1 and health["store"]["ok"]
    text = deployment.worker.metrics()
    for needle in ("tripscore_scorer_feature_read_seconds_bucket", "tripscore_scorer_model_seconds_count",
                   "tripscore_scorer_processing_seconds_count", 'tripscore_scorer_fallbacks_total{reason="no_model"}',
                   'tripscore_scorer_candidates_total{status="missing"}', "tripscore_scorer_feature_age_seconds_count",
                   "tripscore_scorer_decline_risk_bucket", "tripscore_scorer_prediction_psi",
                   f'tripscore_scorer_model_info{{version="{V1}"}} 1.0', "tripscore_scorer_batch_size_bucket"):
        assert needle in text, needle
    assert 'tripscore_scorer_fallbacks_total{reason="no_model"} 0.0' not in text


def _metric(text: str, name: str) -> float:
    """One sample's value from a Prometheus text exposition."""
    return float(next(line for line in text.splitlines() if line.startswith(name + " ")).split()[-1])


def _answered_once(deployment: Deployment, pending: dict[str, concurrent.futures.Future]) -> None:
    """Every request of `pending` answered, none twice."""
    concurrent.futures.wait(pending.values())
    assert sorted(rid for rid, future in pending.items() if future.exception()) == []
    assert [d["request_id"] for d in deployment.duplicates if d["request_id"] in pending] == []


def test_a_burst_waiting_in_the_topic_is_answered_in_full_batches(kafka_settings, tmp_path):
    """The burst is in the topic before the worker starts, and the batch window is longer than taking a full batch
    can last, so only `scorer_batch_max` closes a batch: how many there are depends on the scorer alone, not on how
    fast the machine delivers requests against a 2 ms window."""
    limit = 16
    deployment = Deployment(kafka_settings, tmp_path, start=False, scorer_batch_max=limit, scorer_batch_wait_ms=2000)
    try:
        save_model(deployment.models, make_model(V1))
        pending = {rid: deployment.client.submit(score_request(rid, [("a", 2.0), ("b", 3.0)]), timeout=120)
                   for rid in (f"burst-{i}" for i in range(200))}
        deadline = time.monotonic() + 60
        while count_topic(kafka_settings, deployment.topics["score-requests"]) < len(pending):
            assert time.monotonic() < deadline, "the burst never reached the topic"
            time.sleep(0.1)
        deployment.worker = deployment.start_worker()
        _answered_once(deployment, pending)
        assert {future.result()["model_version"] for future in pending.values()} == {V1}
        metrics = deployment.worker.metrics()
        requests, batches = (_metric(metrics, name) for name in ("tripscore_scorer_batch_size_sum",
                                                                 "tripscore_scorer_batch_size_count"))
        # full batches and the remainder; the window open when the burst arrived may cut the first batch short
        assert requests == len(pending) and batches <= math.ceil(len(pending) / limit) + 1, (requests, batches)
    finally:
        deployment.close()


def test_sigkill_under_load_loses_no_request(kafka_settings, tmp_path):
    deployment = Deployment(kafka_settings, tmp_path)
    try:
        deployment.serve(V1)
        pending = {}
        for i in range(600):
            request = score_request(f"load-{i}", [("a", 2.0), ("b", 3.0), ("c", 1.0), (f"u{i}", 2.5)])
            pending[request["request_id"]] = deployment.client.submit(request, timeout=60)
            if i == 200:
                deployment.worker.kill()
            if i == 400:
                deployment.worker = deployment.start_worker()
            time.sleep(0.005)
        concurrent.futures.wait(pending.values())
        assert sorted(rid for rid, future in pending.items() if future.exception()) == []
        # a redelivered request is ranked the same way again (a deadline fallback is a different store answer)
        scored = {rid: answer["ranked"] for rid, f in pending.items() if (answer := f.result())["strategy"] == "model"}
        redelivered = [d for d in deployment.duplicates if d["strategy"] == "model" and d["request_id"] in scored]
        assert all(duplicate["ranked"] == scored[duplicate["request_id"]] for duplicate in redelivered)
    finally:
        deployment.close()


def _hostile_requests(count: int) -> list[bytes | None]:
    """Generated valid and hostile `score-requests` values (the same ones every run), plus the extremes that once
    broke the agent."""
    generated: list[bytes | None] = []

    @settings(max_examples=count, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(raw_messages(score_request_values()))
    def draw(value: bytes | None) -> None:
        generated.append(value)

    draw()
    huge = b'{"request_id": "' + b"x" * 1_000_000 + b'"}'
    return [*generated, b"[" * 100_000 + b"]" * 100_000, b'{"request_id": "\\ud800"}', huge]


def test_hostile_requests_are_each_answered_once_and_sigterm_still_stops_the_worker(kafka_settings, tmp_path):
    deployment = Deployment(kafka_settings, tmp_path)
    try:
        deployment.serve(V1)
        before = count_topic(kafka_settings, deployment.topics["risk-scores"])
        requests = _hostile_requests(150)
        for i, value in enumerate(requests):
            deployment.send_raw(value if value is not None else b"", f"hostile-{i}")
        deployment.producer.flush()
        deadline = time.monotonic() + 60
        while (answered := count_topic(kafka_settings, deployment.topics["risk-scores"]) - before) < len(requests):
            assert time.monotonic() < deadline and deployment.worker.alive, f"{answered}/{len(requests)} answered"
            time.sleep(0.5)
        time.sleep(1.0)
        assert count_topic(kafka_settings, deployment.topics["risk-scores"]) - before == len(requests)
        assert deployment.ask(score_request("after-hostile", [("a", 1.0)]))["strategy"] == "model"
        started = time.monotonic()
        assert deployment.worker.stop(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        deployment.close()


def test_a_worker_killed_and_restarted_at_once_answers_before_the_session_timeout(kafka_settings, tmp_path):
    """The default member id is claimed per host and slot, so the restarted worker is the same static member: it
    answers as soon as it has started, where a new member would wait for the dead one's session to time out. The
    session timeout is set far beyond a start, so the test tells the two apart on any machine."""
    deployment = Deployment(kafka_settings, tmp_path, instance_id="",
                            scorer_session_timeout_s=RESTART_SESSION_TIMEOUT_S)
    try:
        deployment.serve(V1)
        deployment.worker.kill()
        killed = time.monotonic()
        deployment.worker = WorkerProcess(deployment.settings, tmp_path / "worker.log", deployment.web_port).start()
        answer = deployment.ask(score_request("after-restart", [("a", 1.0)]), timeout=2 * RESTART_SESSION_TIMEOUT_S)
        waited = time.monotonic() - killed
        print(f"kill -9 and restart: first answer {waited:.2f} s after the kill")
        assert answer["strategy"] == "model"
        assert waited < RESTART_SESSION_TIMEOUT_S, f"waited {waited:.1f} s: the restarted worker waited for a rebalance"
    finally:
        deployment.close()


def _children(pid: int) -> list[int]:
    """The pids of a process's children."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _served(metrics_text: str) -> float:
    """Requests a worker answered with the model, from its `/metrics`."""
    line = next(line for line in metrics_text.splitlines() if line.startswith(
        'tripscore_scorer_responses_total{strategy="model"}'))
    return float(line.split()[-1])


def test_two_workers_share_the_requests_and_one_stopped_mid_run_loses_none(kafka_settings, tmp_path):
    """`tripscore score --workers 2`: two members of one group; one stops, the other takes over its partitions
    once the group's session timeout has passed (static members do not leave the group on shutdown)."""
    deployment = Deployment(kafka_settings, tmp_path, scorer_workers=2, scorer_session_timeout_s=6)
    try:
        second = WorkerProcess(deployment.settings, tmp_path / "unused.log", deployment.web_port + 1)  # its web view

        def shared() -> bool:  # both members hold partitions of score-requests, all of them between them
            held = [(worker.health() or {}).get("partitions") or [] for worker in (deployment.worker, second)]
            return all(held) and sorted(held[0] + held[1]) == [0, 1, 2, 3]

        deployment.worker.wait_until(shared, "both workers holding partitions", timeout=60)
        deployment.serve(V1)  # one worker answered with V1; the other polls the registry on its own clock
        deployment.worker.wait_until(lambda: all((worker.health() or {}).get("model_version") == V1
                                                 for worker in (deployment.worker, second)),
                                     f"both workers serving {V1}", timeout=30)
        pending = {}
        for i in range(100):
            request = score_request(f"shared-{i}", [("a", 2.0), ("b", 3.0), (f"u{i}", 1.0)])
            pending[request["request_id"]] = deployment.client.submit(request, timeout=45)
        _answered_once(deployment, pending)
        assert _served(deployment.worker.metrics()) > 0 and _served(second.metrics()) > 0, "one worker got nothing"

        stopped = second.health()["pid"]
        assert stopped in _children(deployment.worker.proc.pid)
        for i in range(100, 300):
            request = score_request(f"shared-{i}", [("a", 2.0), ("b", 3.0), (f"u{i}", 1.0)])
            pending[request["request_id"]] = deployment.client.submit(request, timeout=60)
            if i == 150:
                os.kill(stopped, signal.SIGTERM)
            time.sleep(0.01)
        _answered_once(deployment, pending)
        assert deployment.worker.alive and second.health() is None  # one worker stopped, the other answered
    finally:
        deployment.close()
