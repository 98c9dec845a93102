"""The quick demo end to end: real broker, real Spark jobs, streaming job and Faust scorer as processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from featurestore import open_store
from runtime.config import load_settings
from runtime.processes import settings_env
from tripscore.demo import DEMO_SET_PREFIX

pytestmark = [pytest.mark.kafka, pytest.mark.spark]
# lines of the JVM and of Spark's log4j (`26/12/01 14:43:35 WARN NativeCodeLoader: …`, `WARNING: Using incubator…`)
JVM_OUTPUT = re.compile(r"^(WARNING: |\d\d/\d\d/\d\d \d\d:\d\d:\d\d [A-Z]+ |\S+ \S+ (WARN|ERROR) \w+: |Using Spark's|"
                        r"Setting default log level|To adjust logging level)", re.M)

E2E_SET_PREFIX = "test-e2e-"  # the Aerospike variant's own sets; the demo empties them first


def _running_in_group(pgid: int) -> list[int]:
    """Processes of a process group (a service, its JVM and Python workers) that still run; zombies excluded."""
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            running.append(int(stat.parent.name))
    return running


@pytest.fixture(params=[pytest.param("sqlite"), pytest.param("aerospike", marks=pytest.mark.aerospike)])
def store_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    """The store settings of one variant: SQLite, or Aerospike (skipped without a server) in its own sets."""
    if request.param == "sqlite":
        return {"store": "sqlite"}
    return {"store": "aerospike", "aerospike_hosts": request.getfixturevalue("aerospike_hosts"),
            "aerospike_set_prefix": E2E_SET_PREFIX}


def test_quick_demo_keeps_every_invariant(kafka_bootstrap: str, store_settings: dict[str, str],
                                          tmp_path: Path) -> None:
    home = tmp_path / "demo"
    # A generous feature deadline (and Aerospike client timeout): this test checks delivery invariants, not latency,
    # and a busy CI machine can stall a 20 ms read; the deadline fallback itself is covered by the scorer tests.
    secret = f"pw-{uuid.uuid4().hex}"  # set, unused by this plaintext broker and the store: never to be shown
    env = settings_env({"kafka_bootstrap": kafka_bootstrap, "store_deadline_ms": 2000, "aerospike_timeout_ms": 2000,
                        "kafka_sasl_password": secret, **store_settings,
                        # a CE server would refuse a login, so the Aerospike password is only set where it is unused
                        **({"aerospike_password": secret} if store_settings["store"] == "sqlite" else {})})
    done = subprocess.run([sys.executable, "-m", "tripscore.cli", "demo", "--quick", "--home", str(home)],
                          env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "== summary" in done.stdout
    assert JVM_OUTPUT.findall(done.stdout + done.stderr) == [], "JVM and Spark logs stay in their log files"
    assert list((home / "logs").glob("spark-tripscore-*.log")), "where they went"
    summary = json.loads((home / "summary.json").read_text())
    outputs = [done.stdout, done.stderr, (home / "summary.json").read_text(),
               *(log.read_text(errors="replace") for log in (home / "logs").glob("*.log"))]
    assert len(outputs) >= 5 and not [text for text in outputs if secret in text], "a password is shown"

    assert summary["store"].startswith(store_settings["store"] + " ")
    assert summary["requests_sent"] > 0
    assert summary["requests_answered"] == summary["requests_sent"], "every request answered"
    assert summary["duplicate_answers"] == 0, "answered exactly once"
    assert summary["strategies"].get("model", 0) > 0
    assert summary["model_expected_but_not_used"] == 0, "requests whose candidates have features use the model"
    assert summary["dead_letters"] == summary["planted_bad_events"] > 0, "the DLQ holds only the planted events"
    assert summary["consistency_drivers"] > 0
    assert summary["consistency_worst_mismatch_rate"] == 0.0, "online features equal the offline recomputation"
    assert summary["consistency_incomplete_rate"] == 0.0, "every sampled record applied exactly the logged events"
    assert summary["drivers_caught_up"] > 0 and summary["feature_lag_p99_s"] is not None
    assert Path(summary["reports"], "report.json").exists()
    assert summary["pids"]
    assert not [pid for pgid in summary["pids"] for pid in _running_in_group(pgid)], "started processes are gone"

    demo_store = load_settings(sqlite_path=home / "features.db", **{
        **store_settings, "aerospike_set_prefix": store_settings.get("aerospike_set_prefix", "") + DEMO_SET_PREFIX})
    drivers = {c["driver_id"] for line in (home / "requests.jsonl").read_text().splitlines() if line
               for c in json.loads(line)["candidates"]}
    found = [row for row in open_store(demo_store).read(sorted(drivers), ["_event_ms"]) if row.found]
    assert summary["store_records"] >= len(found) > 0, "the candidates' records are in the demo's store"
