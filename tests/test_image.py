"""The container image (Dockerfile, `make image`) run as its users run it: podman, the host's network, the models
and the store in mounted folders, the local broker, a read-only root file system as in deploy/k8s."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from scorer_helpers import driver_record, expected_risk, make_model, save_model, score_request

from batch.generate import generate_city
from clients import BlockingRiskScoreClient, TripEventProducer
from features.fold import fold
from featurestore.sqlite import SQLiteStore
from runtime.config import ENV_PREFIX, Settings
from runtime.processes import free_port, http_get
from runtime.topics import admin_client, create_topics
from schemas.features import FOLD_BINS

pytestmark = [pytest.mark.image, pytest.mark.kafka]
ROOT = Path(__file__).resolve().parents[1]
VERSION = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
IMAGE = os.environ.get("TRIPSCORE_IMAGE", f"tripscore:{VERSION}")
MAX_IMAGE_BYTES = 1_700_000_000
"""The image's size bound: 1.56 GB measured (pyspark 485 MB with Spark's jars, pyarrow 170 MB, the JRE 185 MB)."""
USER = "10001"
CONTAINERS_CONF = ROOT / ".local" / "containers" / "containers.conf"  # `make podman`: this machine's settings
NO_PODMAN = "podman is not installed (`make podman` installs it from Debian's apt as root; `make test` does)"
MODEL = "trip_decline_risk_lr_v1"


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`podman ARGS` with this machine's settings; AssertionError with its output when it fails (and `check`)."""
    env = dict(os.environ)
    if CONTAINERS_CONF.is_file():
        env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def image() -> str:
    """The image `make image` built; skips where podman is missing, fails where the image is."""
    if shutil.which("podman") is None:
        pytest.skip(NO_PODMAN)
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"no image {IMAGE}: run `make image` (`make test` does)")
    return IMAGE


class Container:
    """One `podman run -d` of the image on the host's network, removed at the end; settings as TRIPSCORE_*."""

    def __init__(self, image: str, args: list[str], settings: dict[str, object], mounts: dict[Path, str]) -> None:
        self.name = f"tripscore-test-{uuid.uuid4().hex[:8]}"
        env = [f"--env={ENV_PREFIX}{key.upper()}={value}" for key, value in settings.items()]
        volumes = [f"--volume={host}:{inside}" for host, inside in mounts.items()]
        # --read-only: a read-only root, as deploy/k8s runs it (podman puts /tmp in memory); the home folder
        # (TRIPSCORE_HOME: Spark's scratch, Faust's data) is a folder of the test, as an emptyDir there
        podman("run", "--detach", f"--name={self.name}", "--network=host", "--read-only", *env, *volumes, image, *args)

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return (done.stdout + done.stderr)[-4000:]

    def running(self) -> bool:
        return podman("inspect", "--format={{.State.Running}}", self.name).stdout.strip() == "true"

    def wait_until(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.running(), f"the container stopped before {what}:\n{self.logs()}"
            assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s:\n{self.logs()}"
            time.sleep(0.5)

    def rss_mib(self) -> float:
        """Resident memory of the container's main process (the host sees it in /proc)."""
        pid = podman("inspect", "--format={{.State.Pid}}", self.name).stdout.strip()
        return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024

    def stop(self, grace_s: int) -> tuple[int, float]:
        """SIGTERM (`podman stop`, SIGKILL after `grace_s`): the exit code and the seconds it took to stop."""
        started = time.monotonic()
        podman("stop", f"--time={grace_s}", self.name, timeout=grace_s + 60)
        took = time.monotonic() - started
        return int(podman("inspect", "--format={{.State.ExitCode}}", self.name).stdout), took

    def remove(self) -> None:
        podman("rm", "--force", self.name, check=False)


@pytest.fixture
def run(image: str, tmp_path: Path) -> Iterator:
    started: list[Container] = []

    def start(args: list[str], settings: dict[str, object], mounts: dict[Path, str]) -> Container:
        home = owned_by_image_user(tmp_path / f"home-{len(started)}")
        started.append(Container(image, args, settings, {**mounts, home: "/var/lib/tripscore"}))
        return started[-1]

    yield start
    for container in started:
        container.remove()


@pytest.fixture
def topics(kafka_settings: Settings) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    names = {name: f"image-{name}-{tag}" for name in
             ("trip-events", "trip-events-dlq", "score-requests", "risk-scores", "score-dlq")}
    create_topics(kafka_settings, names.values(), partitions=2)
    yield names
    with admin_client(kafka_settings) as admin:
        admin.delete_topics(list(names.values()), raise_errors=False)


def owned_by_image_user(folder: Path) -> Path:
    """A folder the image's user can write, as a user chowns a volume for it."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, int(USER), int(USER))
    return folder


def test_the_image_is_under_its_size_and_runs_as_a_non_root_user(image: str) -> None:
    size = int(podman("image", "inspect", "--format={{.Size}}", image).stdout)
    print(f"\n{image}: {size / 1e6:.0f} MB (bound {MAX_IMAGE_BYTES / 1e6:.0f} MB)")
    assert size < MAX_IMAGE_BYTES
    config = podman("image", "inspect", "--format={{.Config.User}} {{json .Config.Entrypoint}}", image).stdout
    assert config.split() == [f"{USER}:{USER}", '["tripscore"]']
    whoami = podman("run", "--rm", "--entrypoint=id", image).stdout
    assert whoami.startswith(f"uid={USER}(tripscore) gid={USER}(tripscore) "), whoami
    usage = podman("run", "--rm", image, "--help").stdout  # the entrypoint is the CLI
    assert "retrain" in usage and "backfill" in usage and "stream" in usage


def test_the_scorer_answers_from_the_broker_with_the_mounted_model_and_stops_on_sigterm(
        run, kafka_settings: Settings, topics: dict[str, str], tmp_path: Path) -> None:
    models = tmp_path / "models"
    save_model(models, make_model(MODEL))
    store = owned_by_image_user(tmp_path / "store")
    with SQLiteStore(store / "features.db") as features:
        features.write([driver_record("a", 0.9), driver_record("b", 0.1), driver_record("c", 0.0)])
    owned_by_image_user(store)
    port = free_port()
    scorer = run(["score"], {
        "kafka_bootstrap": kafka_settings.kafka_bootstrap, "scorer_web_port": port,
        "scorer_app_id": f"image-scorer-{topics['score-requests']}", "models_dir": "/models",
        "sqlite_path": "/store/features.db", "topic_score_requests": topics["score-requests"],
        "topic_risk_scores": topics["risk-scores"], "topic_score_dlq": topics["score-dlq"],
    }, {models: "/models:ro", store: "/store"})

    def healthy() -> bool:  # 503 (degraded) until the model and the store answer
        body = http_get(f"http://127.0.0.1:{port}/health")
        return body is not None and json.loads(body)["status"] == "ok"

    scorer.wait_until(healthy, "/health ok", 180)
    assert podman("healthcheck", "run", scorer.name, check=False).returncode == 0, scorer.logs()  # HEALTHCHECK
    assert podman("exec", scorer.name, "id", "-u").stdout.strip() == USER
    print(f"\nscorer worker RSS {scorer.rss_mib():.0f} MiB")

    client_settings = kafka_settings.with_overrides(topic_score_requests=topics["score-requests"],
                                                    topic_risk_scores=topics["risk-scores"])
    client = BlockingRiskScoreClient(client_settings)
    try:
        futures = [client.submit(score_request(f"image-{i}", [("a", 2.0), ("b", 3.0), ("c", 4.0), ("ghost", 1.0)]))
                   for i in range(20)]
        answers = [future.result(timeout=60) for future in futures]
    finally:
        client.close()
    for answer in answers:
        assert (answer["strategy"], answer["model_version"]) == ("model", MODEL), answer
        risks = {c["driver_id"]: c["decline_risk"] for c in answer["ranked"]}
        assert risks["a"] == pytest.approx(expected_risk(0.9)) and risks["c"] == pytest.approx(expected_risk(0.0))
        assert [c["driver_id"] for c in answer["ranked"]] == ["ghost", "b", "c", "a"]

    code, took = scorer.stop(grace_s=30)
    print(f"scorer stopped in {took:.1f} s, exit {code}")
    assert code == 0, scorer.logs()


def test_the_stream_folds_the_broker_s_events_into_the_mounted_store_and_stops_on_sigterm(
        run, kafka_settings: Settings, topics: dict[str, str], tmp_path: Path) -> None:
    settings = kafka_settings.with_overrides(topic_trip_events=topics["trip-events"])
    messages = list(generate_city(seed=11, drivers=30, days=1).messages())
    with TripEventProducer(settings) as producer:
        assert producer.send_all(messages) == []
    by_driver: dict[str, list] = {}
    for m in messages:
        by_driver.setdefault(m["driver_id"], []).append((m["ts"], m["event_id"], m["event_type"], m.get("rating")))
    expected = {driver: fold(events).to_bins() for driver, events in by_driver.items()}
    store = owned_by_image_user(tmp_path / "store")
    stream = run(["stream", "--checkpoint", "/store/checkpoint"], {
        "kafka_bootstrap": kafka_settings.kafka_bootstrap, "sqlite_path": "/store/features.db",
        "topic_trip_events": topics["trip-events"], "topic_trip_events_dlq": topics["trip-events-dlq"],
        "stream_metrics_port": free_port(), "stream_trigger_ms": 200,
    }, {store: "/store"})

    def stored() -> dict[str, dict | None]:
        if not (store / "features.db").is_file():
            return {}
        with SQLiteStore(store / "features.db") as features:
            rows = features.read(sorted(expected), FOLD_BINS)
        return {row.entity_id: row.bins for row in rows}

    stream.wait_until(lambda: stored() == expected, f"the store holding the fold of {len(messages)} events", 420)
    code, took = stream.stop(grace_s=60)
    print(f"\nstream: {len(messages)} events of {len(expected)} drivers in the store; stopped in {took:.1f} s, "
          f"exit {code}")
    assert code == 0, stream.logs()
    assert "SIGTERM received" in stream.logs()
    assert stored() == expected


def test_the_executor_pods_command_starts_spark_s_kubernetes_executor_backend(image: str) -> None:
    """deploy/k8s/stream.yaml's executor pods run `spark-executor executor` with Spark's SPARK_* variables. No
    cluster here: with a driver address nobody listens on, the backend must start and fail only to reach it."""
    port = free_port()
    spark_env = {"SPARK_EXECUTOR_MEMORY": "512m", "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@127.0.0.1:{port}",
                 "SPARK_EXECUTOR_ID": "1", "SPARK_EXECUTOR_CORES": "1", "SPARK_APPLICATION_ID": "spark-test",
                 "SPARK_EXECUTOR_POD_IP": "127.0.0.1", "SPARK_RESOURCE_PROFILE_ID": "0",
                 "SPARK_EXECUTOR_POD_NAME": "executor-1", "SPARK_JAVA_OPT_0": "-Dspark.executor.id.check=1"}
    done = podman("run", "--rm", "--network=host", "--read-only", "--entrypoint=spark-executor",
                  *[f"--env={key}={value}" for key, value in spark_env.items()], image, "executor",
                  check=False, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "INFO KubernetesExecutorBackend: Started daemon" in output, output[-3000:]
    assert f"Failed to connect to /127.0.0.1:{port}" in output, output[-3000:]
    wrong = podman("run", "--rm", "--entrypoint=spark-executor", image, "driver", check=False)
    assert wrong.returncode == 2 and "argument 'executor'" in wrong.stderr
