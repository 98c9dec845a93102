"""deploy/: alert rules and dashboard use only metrics the code exports, promtool agrees; retrain schedules."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from batch.retrain import EXIT_FAILED, EXIT_KEPT
from runtime.config import load_settings
from scorer.metrics import REGISTRY
from streaming.metrics import StreamMetrics
from streaming.source_lag import SourceLag

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
METRIC = re.compile(r"\btripscore_[a-z0-9_]+")
SERIES_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
PROMETHEUS_OWN = {"up"}  # series Prometheus writes for every target
# what the issue asks the kit to watch, by alert
ALERTS = {"TripscoreFeatureLagHigh", "TripscoreStreamDeadLettersHigh", "TripscoreScorerDeadLettersHigh",
          "TripscoreFallbackRateHigh", "TripscoreRequestLatencyHigh", "TripscoreScoreDrift", "TripscoreNoModelLoaded",
          "TripscoreScorerDown", "TripscoreStreamDown", "TripscoreStreamStalled"}


def exported_series(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry exposes, from its metric families (labelled ones may have no sample yet)."""
    return {family.name + suffix for family in registry.collect() for suffix in SERIES_SUFFIXES[family.type]}


def code_series() -> set[str]:
    nowhere = load_settings(kafka_bootstrap="127.0.0.1:1")  # the source lag's scrape-time query fails fast: NaN
    stream = StreamMetrics(port=0, bind="127.0.0.1", source_lag=SourceLag(nowhere, "trip-events", {}))
    try:
        return exported_series(REGISTRY) | exported_series(stream.registry)
    finally:
        stream.close()


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load((PROMETHEUS / "tripscore-alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "tripscore.json").read_text())


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = code_series()
    assert {"tripscore_scorer_fallbacks_total", "tripscore_stream_events_total",
            "tripscore_scorer_end_to_end_seconds_bucket", "tripscore_scorer_model_info"} <= exported
    for source, expressions in (("alert rules", list(rule_expressions().values())),
                                ("dashboard", dashboard_expressions())):
        used = {name for expr in expressions for name in METRIC.findall(expr)}
        assert used, source
        assert used - exported == set(), f"{source} use metrics the code does not export"


def test_the_kit_watches_every_figure_and_the_jobs_exist() -> None:
    rules = rule_expressions()
    assert set(rules) == ALERTS
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in scrape["scrape_configs"]}
    used_jobs = set(re.findall(r'job="([^"]+)"', " ".join(rules.values())))
    assert used_jobs == jobs == {"tripscore-scorer", "tripscore-stream"}
    panels = " ".join(dashboard_expressions())
    for needle in ("freshness_lag", "stream_events_total", "dead_letters_total", "fallbacks_total",
                   "end_to_end_seconds_bucket", "prediction_psi", "model_info", "up{"):
        assert needle in panels, needle


def test_grafana_provisioning_matches_the_dashboard_and_compose() -> None:
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    assert {panel["datasource"]["uid"] for panel in dashboard()["panels"]} == {uid}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("prometheus", "grafana"):
        assert compose[name]["profiles"] == ["observability"]
        for volume in compose[name]["volumes"]:
            host = volume.split(":")[0]
            assert not host.startswith(".") or (ROOT / host).exists(), volume
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tripscore.yml").read_text())
    mounted = {v.split(":")[1] for v in compose["grafana"]["volumes"]}
    assert provider["providers"][0]["options"]["path"] in mounted


def promtool() -> str:
    """promtool from the venv (`make promtool`) or the PATH; the test skips without it."""
    found = shutil.which("promtool", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                           os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip("promtool not installed (Debian's prometheus package; `make promtool` unpacks it into .venv)")
    return found


@pytest.mark.parametrize("command", [["check", "config", "prometheus.yml"],
                                     ["check", "rules", "tripscore-alerts.yml"],
                                     ["test", "rules", "tripscore-alerts.test.yml"]], ids=" ".join)
def test_promtool_accepts_the_config_and_the_rules_fire_as_meant(command: list[str]) -> None:
    done = subprocess.run([promtool(), *command], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_retrain_schedules_run_retrain_and_know_its_exit_codes() -> None:
    job = yaml.safe_load((ROOT / "deploy" / "retrain" / "cronjob.yaml").read_text())["spec"]["jobTemplate"]["spec"]
    container = job["template"]["spec"]["containers"][0]
    assert container["command"] + container["args"][:1] == ["tripscore", "retrain"]
    no_retry = job["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"]
    assert EXIT_KEPT in no_retry and EXIT_FAILED not in no_retry
    service = (ROOT / "deploy" / "retrain" / "tripscore-retrain.service").read_text()
    assert re.search(r"^ExecStart=\S*tripscore retrain\b", service, re.M)
    assert f"\nSuccessExitStatus={EXIT_KEPT}\n" in service
    assert "\nOnCalendar=" in (ROOT / "deploy" / "retrain" / "tripscore-retrain.timer").read_text()
