"""Kafka over SASL_SSL for every client, endpoints bound on purpose, secrets never shown.

A secured local broker (`tripscore kafka up --secure`: throwaway CA, SCRAM-SHA-512 user) on free loopback ports
carries replay -> streaming job -> SQLite store and a scored request through a real worker; a wrong password
and an untrusted CA fail fast with one line; a known password is then looked for in every output.
"""

from __future__ import annotations

import dataclasses
import json
import re
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer
from scorer_helpers import score_request
from topic_reader import read_raw_topic

from batch.eventlog import to_messages
from batch.generate import generate_city
from batch.replay import replay
from clients import BlockingRiskScoreClient
from featurestore import open_store
from runtime import kafka_local, kafka_secure
from runtime.config import Settings, load_settings
from runtime.kafka_clients import (
    RECONNECT_BACKOFF_MAX_MS,
    KafkaAccessError,
    check_access,
    jaas_config,
    kafka_python_options,
    producer_options,
    security_protocol,
    spark_kafka_options,
    ssl_context,
)
from runtime.processes import free_port, http_get, settings_env
from runtime.spark import default_conf
from runtime.topics import create_topics
from schemas.features import BIN_NAMES
from scorer.app import faust_app
from scorer.harness import WorkerProcess
from streaming.metrics import StreamMetrics
from tripscore import cli

pytestmark = pytest.mark.kafka
PASSWORD = f"pw-{uuid.uuid4().hex}"
"""The known password: the SCRAM user's, searched for in every output afterwards."""
KEY_PATH = f"/nonexistent/{uuid.uuid4().hex}/client-key.pem"
"""A client key path that must never be shown either."""
SECURE = {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
          "kafka_sasl_username": "tripscore-test", "kafka_sasl_password": PASSWORD}
LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d %p %c: %m%n
logger.spark.name = org.apache.spark
logger.spark.level = info
logger.connector.name = org.apache.spark.sql.kafka010
logger.connector.level = debug
logger.kafka.name = org.apache.kafka
logger.kafka.level = info
"""
"""Spark's log configuration for the stream here: its own and the Kafka clients' configuration dumps shown (the
job's `setLogLevel("WARN")` lowers only the root logger)."""


def kafka_fields(settings: Settings) -> dict[str, object]:
    """The `kafka_*` settings, for a child process's `TRIPSCORE_*` environment."""
    return {name: value for name, value in dataclasses.asdict(settings).items() if name.startswith("kafka_")}


def listening(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on `port`, from /proc/net/tcp."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, port_hex = local.partition(":")
        if state == "0A" and int(port_hex, 16) == port:
            addresses.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return addresses


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A SASL_SSL-only broker started by `tripscore kafka up --secure`; settings of a client that trusts its CA."""
    home = tmp_path_factory.mktemp("secure-kafka")
    settings = load_settings(home=home, kafka_bootstrap=f"127.0.0.1:{free_port()}", **SECURE)
    env = {**kafka_fields(settings), "home": home}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(f"TRIPSCORE_{name.upper()}", str(value))
        started = time.monotonic()
        assert cli.main(["kafka", "up", "--secure", "--controller-port", str(free_port())]) == 0
        print(f"secured broker up in {time.monotonic() - started:.1f} s")
    ca = kafka_secure.ca_file(kafka_local.BrokerPaths.of(settings).root)
    try:
        yield settings.with_overrides(kafka_ssl_cafile=str(ca))
    finally:
        kafka_local.stop(settings)


@pytest.fixture(scope="module")
def untrusted_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The certificate of another CA, which did not sign the secured broker's."""
    other = tmp_path_factory.mktemp("other-ca")
    kafka_secure.make_certificates(other, "127.0.0.1")
    return kafka_secure.ca_file(other)


def test_security_settings_become_each_clients_options() -> None:
    settings = load_settings(kafka_bootstrap="a:1,b:2", kafka_ssl_cafile="/ca.pem", **SECURE)
    assert spark_kafka_options(settings) == {
        "kafka.bootstrap.servers": "a:1,b:2", "kafka.security.protocol": "SASL_SSL",
        "kafka.ssl.truststore.type": "PEM", "kafka.ssl.truststore.location": "/ca.pem",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                                  f'username="tripscore-test" password="{PASSWORD}";',
    }
    quoted = jaas_config(settings.with_overrides(kafka_sasl_password='a"b\\c'))
    assert quoted.endswith('password="a\\"b\\\\c";'), quoted
    plain = load_settings(kafka_bootstrap="a:1")
    assert kafka_python_options(plain) == {"bootstrap_servers": ["a:1"], "security_protocol": "PLAINTEXT",
                                           "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS}
    assert producer_options(plain)["acks"] == "all" and producer_options(plain)["enable_idempotence"]
    app = faust_app(load_settings(home=Path("/tmp"), kafka_bootstrap="a:1", **SECURE), lambda *_: [])
    assert app.conf.broker_credentials.password == PASSWORD and app.conf.producer_acks == -1
    redaction = re.compile(default_conf(settings)["spark.redaction.regex"])
    assert all(redaction.search(key) for key in ("kafka.ssl.keystore.key", "spark.some.password"))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"kafka_security_protocol": "TLS"}, "expected one of PLAINTEXT"),
    ({"kafka_sasl_mechanism": "GSSAPI"}, "TRIPSCORE_KAFKA_SASL_MECHANISM='GSSAPI'"),
    ({"kafka_sasl_password": ""}, "needs TRIPSCORE_KAFKA_SASL_USERNAME and TRIPSCORE_KAFKA_SASL_PASSWORD"),
    ({"kafka_ssl_keyfile": KEY_PATH}, "needs both TRIPSCORE_KAFKA_SSL_CERTFILE and TRIPSCORE_KAFKA_SSL_KEYFILE"),
])
def test_inconsistent_security_settings_are_refused_by_name(overrides: dict, message: str) -> None:
    with pytest.raises(KafkaAccessError, match=message) as raised:
        security_protocol(load_settings(**{**SECURE, **overrides}))
    assert PASSWORD not in str(raised.value) and KEY_PATH not in str(raised.value)


def test_settings_and_client_errors_never_show_secrets() -> None:
    settings = load_settings(**SECURE, kafka_ssl_certfile=KEY_PATH, kafka_ssl_keyfile=KEY_PATH)
    assert PASSWORD not in repr(settings) and KEY_PATH not in repr(settings)
    assert settings.redacted()["kafka_sasl_password"] == settings.redacted()["kafka_ssl_keyfile"] == "***"
    with pytest.raises(KafkaAccessError) as raised:
        ssl_context(settings)
    assert "No such file" in str(raised.value) and KEY_PATH not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    with pytest.raises(KafkaAccessError) as raised:
        spark_kafka_options(settings)
    assert KEY_PATH not in str(raised.value)


def test_help_never_shows_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**SECURE, "kafka_ssl_keyfile": KEY_PATH, "aerospike_password": PASSWORD}.items():
        monkeypatch.setenv(f"TRIPSCORE_{name.upper()}", value)
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    helps = [parser.format_help()] + [command.format_help() for command in commands.values()]
    assert len(helps) > 10 and not [text for text in helps if PASSWORD in text or KEY_PATH in text]


def test_endpoints_bind_where_asked() -> None:
    port = free_port()
    metrics = StreamMetrics(port, "127.0.0.2")
    try:
        assert listening(port) == {"127.0.0.2"}
        assert "tripscore_stream_batches" in (http_get(f"http://127.0.0.2:{port}/metrics") or "")
    finally:
        metrics.close()
    assert load_settings().web_bind == "127.0.0.1"
    app = faust_app(load_settings(home=Path("/tmp"), web_bind="127.0.0.2"), lambda *_: [])
    assert app.conf.web_bind == "127.0.0.2"


def test_replay_stream_store_and_score_over_sasl_ssl(secure_kafka: Settings, tmp_path: Path) -> None:
    """The whole path through the SASL_SSL listener, then the known password is looked for in every output."""
    tag = uuid.uuid4().hex[:8]
    topics = {name: f"{name}-{tag}" for name in ("trip_events", "trip_events_dlq", "score_requests", "risk_scores")}
    create_topics(secure_kafka, topics.values(), partitions=2)
    settings = secure_kafka.with_overrides(
        home=tmp_path, sqlite_path=tmp_path / "features.db", models_dir=tmp_path / "models",
        **{f"topic_{name}": topic for name, topic in topics.items()}, topic_score_dlq=topics["trip_events_dlq"])
    env_settings = {**kafka_fields(settings), "home": tmp_path, "sqlite_path": settings.sqlite_file,
                    "models_dir": settings.models_dir, **{f"topic_{n}": t for n, t in topics.items()},
                    "topic_score_dlq": topics["trip_events_dlq"], "scorer_app_id": f"secure-{tag}"}
    (tmp_path / "models").mkdir()

    events = generate_city(seed=3, drivers=6, days=1, workers=1).events.slice(0, 200)
    sent = replay(to_messages(events), events.num_rows, settings, topics["trip_events"], rate=0, bad=2,
                  progress=False)
    assert (sent.sent, sent.bad) == (200, 2)

    conf = tmp_path / "spark-conf"
    conf.mkdir()
    (conf / "log4j2.properties").write_text(LOG4J2)
    stream = subprocess.run([sys.executable, "-m", "tripscore.cli", "stream", "--available-now", "--metrics-port",
                             "0", "--checkpoint", str(tmp_path / "checkpoint")],
                            env={**settings_env(env_settings), "SPARK_CONF_DIR": str(conf)},
                            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    stream_output = stream.stdout + stream.stderr + (tmp_path / "logs" / "spark-tripscore-stream.log").read_text()
    assert stream.returncode == 0, stream_output[-4000:]
    assert "sasl.jaas.config = [hidden]" in stream_output, "the Kafka clients' configuration was logged"
    drivers = sorted(set(events.column("driver_id").to_pylist()))
    assert all(row.found for row in open_store(settings).read(drivers, BIN_NAMES))

    worker = WorkerProcess(env_settings, tmp_path / "worker.log").start()
    client = BlockingRiskScoreClient(settings)
    producer = KafkaProducer(**producer_options(settings), linger_ms=0)
    try:
        worker.wait_ready()
        assert listening(worker.web_port) == {"127.0.0.1"}, "the worker's web server binds to loopback only"
        request = score_request(f"secure-{tag}", [(drivers[0], 3.0), (drivers[1], 5.0)])
        producer.send(topics["score_requests"], key=b"malformed", value=b"{not json")  # no client of ours sends it
        producer.flush()
        answer = client.score(request, timeout=60)
    finally:
        producer.close()
        client.close()
        worker.stop()
    assert answer["strategy"] == "distance_only" and answer["reason"] == "no_model"
    assert sorted(c["driver_id"] for c in answer["ranked"]) == drivers[:2]

    dead_letters = [value.decode() for _, value in read_raw_topic(settings, topics["trip_events_dlq"], 3)]
    assert len(dead_letters) == 3, "two planted invalid events and the malformed request"
    outputs = {"stream output": stream_output, "worker log": worker.log_tail(10**9),
               "broker log": kafka_local.BrokerPaths.of(secure_kafka).server_log.read_text(),
               "dead letters": json.dumps(dead_letters)}
    assert not [name for name, text in outputs.items() if PASSWORD in text], "the password is shown"


def _faulty(secure_kafka: Settings, untrusted_ca: Path, fault: str) -> tuple[Settings, str]:
    """Settings with `fault`, and what the one line says about it."""
    if fault == "wrong password":
        return secure_kafka.with_overrides(kafka_sasl_password=PASSWORD[::-1]), "refused the"
    return secure_kafka.with_overrides(kafka_ssl_cafile=str(untrusted_ca)), "not trusted"


@pytest.mark.parametrize("fault", ["wrong password", "untrusted CA"])
def test_the_login_check_refuses_at_once(secure_kafka: Settings, untrusted_ca: Path, fault: str) -> None:
    """One login, no retries: the refusal comes in a fraction of the time a retrying client would wait (its
    10 s login timeout, then its request timeouts)."""
    settings, expected = _faulty(secure_kafka, untrusted_ca, fault)
    started = time.monotonic()
    with pytest.raises(KafkaAccessError, match=expected):
        check_access(settings)
    assert time.monotonic() - started < 5, f"took {time.monotonic() - started:.1f} s"


@pytest.mark.parametrize("command", [["topics", "create"], ["score"], ["stream"]])
@pytest.mark.parametrize("fault", ["wrong password", "untrusted CA"])
def test_refused_login_and_untrusted_certificate_fail_fast_with_one_line(
    secure_kafka: Settings, untrusted_ca: Path, command: list[str], fault: str
) -> None:
    """Each command runs the login check before it starts a client: its one line is the check's. (How long the
    command takes is mostly imports, which depend on the machine; the check's own time is tested above.)"""
    settings, expected = _faulty(secure_kafka, untrusted_ca, fault)
    done = subprocess.run([sys.executable, "-m", "tripscore.cli", *command], capture_output=True, text=True,
                          env={**settings_env(kafka_fields(settings)), "TRIPSCORE_HOME": str(secure_kafka.home)},
                          timeout=120, stdin=subprocess.DEVNULL)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], lines
    assert PASSWORD not in lines[0] and PASSWORD[::-1] not in lines[0]


def test_clients_check_the_broker_certificate_and_name(secure_kafka: Settings) -> None:
    context = ssl_context(secure_kafka)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    config = kafka_local.BrokerPaths.of(secure_kafka).config
    assert PASSWORD in config.read_text() and config.stat().st_mode & 0o077 == 0, "the broker's config is owner-only"
