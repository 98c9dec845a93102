"""The batch backfill and the streaming job on a real Spark standalone cluster (master and worker as their own JVMs),
submitted as README "Going to production" says, end with the same store as a local-mode run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.compute as pc
import pyspark
import pytest

from batch.backfill import backfill
from batch.eventlog import to_messages, write_events
from batch.generate import generate_city
from batch.replay import replay
from featurestore import open_store
from runtime.config import Settings, load_settings
from runtime.jars import jar_files
from runtime.processes import free_port, http_get, settings_env
from schemas.features import FOLD_BINS
from streaming.job import StreamOptions, run

pytestmark = [pytest.mark.cluster, pytest.mark.kafka, pytest.mark.spark]

SOURCE_TREE = Path(__file__).resolve().parent.parent
SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
ENTRY_POINT = SOURCE_TREE / "deploy" / "spark_submit.py"
DAY_MS = 86_400_000


def _launch(command: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """A JVM in its own process group, output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after 20 s."""
    for signum, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _master_state(web_port: int) -> dict:
    body = http_get(f"http://127.0.0.1:{web_port}/json/")
    try:
        return json.loads(body) if body else {}
    except json.JSONDecodeError:
        return {}


@pytest.fixture(scope="module")
def spark_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A standalone master and one worker (2 cores, 2 GiB) on 127.0.0.1; yields the master URL and its web port.
    Both JVMs are stopped afterwards, whatever happened."""
    folder = tmp_path_factory.mktemp("spark-standalone")
    port, web_port, worker_web_port = free_port(), free_port(), free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}
    url = f"spark://127.0.0.1:{port}"
    master = _launch([str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                      "--port", str(port), "--webui-port", str(web_port)], folder / "master.log", env)
    worker = _launch([str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                      "--cores", "2", "--memory", "2g", "--webui-port", str(worker_web_port),
                      "--work-dir", str(folder / "work"), url], folder / "worker.log", env)
    try:
        deadline = time.monotonic() + 120
        while _master_state(web_port).get("aliveworkers", 0) < 1:
            if master.poll() is not None or worker.poll() is not None or time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-2000:] for p in (folder / "master.log", folder / "worker.log"))
                pytest.fail(f"the standalone cluster did not come up:\n{logs}")
            time.sleep(0.5)
        yield url, web_port
    finally:
        _stop(worker)
        _stop(master)


@pytest.fixture(scope="module")
def shipped_code(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The project as a `--py-files` zip (its wheel, renamed) and a Python that has the dependencies but not the
    project, so the driver and executors can only run code that spark-submit shipped."""
    folder = tmp_path_factory.mktemp("shipped")
    shutil.rmtree(SOURCE_TREE / "build", ignore_errors=True)  # setuptools' staging folder: stale files would ship
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(folder), "."],
                   cwd=SOURCE_TREE, check=True, capture_output=True)
    wheel = next(folder.glob("tripscore-*.whl"))
    archive = shutil.copy(wheel, folder / "tripscore.zip")
    bare = folder / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    site = next((bare / "lib").glob("python*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = bare / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import pyspark, numpy; import runtime"], cwd=folder,
                           capture_output=True, text=True)
    assert "No module named 'runtime'" in probe.stderr, "the executors' Python must not see the project"
    return Path(archive), python


def _submit(master: str, code: tuple[Path, Path], settings: Settings, cwd: Path, *command: str) -> Callable[[], None]:
    """Start `spark-submit` of one tripscore command as README "Going to production" gives it; returns the wait
    for its success (stopped after 10 min, log tail on failure)."""
    archive, python = code
    jars = ",".join(str(jar) for jar in jar_files("spark"))
    env = {**settings_env({"kafka_bootstrap": settings.kafka_bootstrap, "sqlite_path": settings.sqlite_file,
                           "topic_trip_events": settings.topic_trip_events,
                           "topic_trip_events_dlq": settings.topic_trip_events_dlq, "home": cwd}),
           "PYSPARK_PYTHON": str(python), "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("TRIPSCORE_JARS_DIR", None)
    log = cwd / f"submit-{command[0]}.log"
    job = _launch([str(SPARK_SUBMIT), "--master", master, "--jars", jars, "--py-files", str(archive),
                   str(ENTRY_POINT), *command], log, env, cwd)

    def finished() -> None:
        try:
            code = job.wait(600)
        except subprocess.TimeoutExpired:
            _stop(job)
            code = None
        assert code == 0, f"spark-submit {command[0]} exited with {code}:\n{log.read_text(errors='replace')[-6000:]}"

    return finished


def _records(settings: Settings, ids: list[str]) -> dict[str, dict | None]:
    return {row.entity_id: row.bins for row in open_store(settings).read(ids, FOLD_BINS)}


def test_backfill_and_stream_on_a_standalone_cluster_equal_local_mode(spark, spark_master, shipped_code,
                                                                     kafka_bootstrap, new_topic, tmp_path) -> None:
    city = generate_city(drivers=80, days=3)
    ts, cutoff = city.events.column("ts_ms"), city.config.start_ms + 2 * DAY_MS  # history 2 days, live 1 day
    write_events(city.events.filter(pc.less(ts, cutoff)), tmp_path / "events")
    live = city.events.filter(pc.greater_equal(ts, cutoff))
    topics = {"topic_trip_events": new_topic(partitions=4), "topic_trip_events_dlq": new_topic(partitions=1)}
    local = load_settings(kafka_bootstrap=kafka_bootstrap, sqlite_path=tmp_path / "local.db", **topics)
    replay(to_messages(live), live.num_rows, local, topics["topic_trip_events"], rate=0, progress=False)
    on_cluster = local.with_overrides(sqlite_path=tmp_path / "cluster.db")

    master, web_port = spark_master
    started = time.monotonic()
    backfilled = _submit(master, shipped_code, on_cluster, tmp_path, "backfill", "--events", str(tmp_path / "events"))
    backfill(spark, local, tmp_path / "events", progress=False)  # the local-mode run, while the cluster works
    run(spark, local, StreamOptions.from_settings(local, checkpoint=tmp_path / "local-checkpoint",
                                                  available_now=True, metrics_port=0))
    backfilled()  # the stream seeds new drivers' state from the store, so it starts after the backfill
    _submit(master, shipped_code, on_cluster, tmp_path, "stream", "--available-now",
            "--checkpoint", str(tmp_path / "cluster-checkpoint"), "--metrics-port", "0")()
    print(f"\nbackfill and stream on {master} and in local mode: {time.monotonic() - started:.0f} s")

    apps = {app["name"] for app in _master_state(web_port).get("completedapps", [])}
    assert {"tripscore-backfill", "tripscore-stream"} <= apps, "both jobs ran on the cluster"
    drivers = sorted(set(city.events.column("driver_id").to_pylist()))
    expected = _records(local, drivers)
    assert sum(record is not None for record in expected.values()) == len(drivers)
    assert _records(on_cluster, drivers) == expected
