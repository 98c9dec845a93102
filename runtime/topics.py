"""Kafka admin helpers: wait for a broker, create the topics of docs/spec.md idempotently, list partitions,
count messages."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError

from runtime.config import Settings
from runtime.kafka_clients import bootstrap_list, host_port, kafka_python_options

log = logging.getLogger(__name__)


def spec_topics(settings: Settings) -> list[str]:
    """The four topics of docs/spec.md §2, named by the settings."""
    return [
        settings.topic_trip_events,
        settings.topic_trip_events_dlq,
        settings.topic_score_requests,
        settings.topic_risk_scores,
    ]


def admin_client(settings: Settings, timeout_s: float = 10.0) -> KafkaAdminClient:
    """An admin client; raises `KafkaError` when no broker answers within `timeout_s`."""
    timeout_ms = int(timeout_s * 1000)
    return KafkaAdminClient(
        **kafka_python_options(settings),
        client_id="tripscore-admin",
        request_timeout_ms=max(timeout_ms, 1000),
        bootstrap_timeout_ms=timeout_ms,
    )


def default_replication_factor(settings: Settings, timeout_s: float = 10.0) -> int:
    """The brokers' `default.replication.factor`, which topics created without one get (as `topics create` does);
    1, with a warning, when no broker tells."""
    key = "default.replication.factor"
    try:
        with admin_client(settings, timeout_s) as admin:
            broker = str(admin.describe_cluster()["brokers"][0]["broker_id"])
            resource = ConfigResource(ConfigResourceType.BROKER, broker, configs=[key])
            return int(admin.describe_configs([resource], config_filter="all")["broker"][broker][key]["value"])
    except (KafkaError, OSError, LookupError, ValueError) as exc:
        log.warning("could not read the brokers' %s (%s); using 1", key, exc)
        return 1


def _any_port_open(settings: Settings, timeout_s: float) -> bool:
    """True when some `host:port` of the bootstrap list accepts a TCP connection (cheap pre-check)."""
    for server in bootstrap_list(settings):
        try:
            with socket.create_connection(host_port(server), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def broker_ready(settings: Settings, timeout_s: float = 2.0) -> bool:
    """True when a broker at `settings.kafka_bootstrap` answers a metadata request and lists itself."""
    if not _any_port_open(settings, timeout_s):
        return False
    try:
        with admin_client(settings, timeout_s) as admin:
            return bool(admin.describe_cluster()["brokers"])
    except (KafkaError, OSError) as exc:
        log.debug("broker at %s not ready: %s", settings.kafka_bootstrap, exc)
        return False


def wait_for_broker(settings: Settings, timeout: float = 60.0) -> None:
    """Block until a broker at `settings.kafka_bootstrap` accepts clients; `TimeoutError` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not broker_ready(settings):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no Kafka broker answered at {settings.kafka_bootstrap} within {timeout:.0f} s")
        time.sleep(0.5)


def min_insync_replicas(replication_factor: int) -> int:
    """Replicas a write with acks=all needs: all but one, so one broker can be lost without stopping producers."""
    return max(1, replication_factor - 1)


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Partition count of every non-internal topic, by name."""
    with admin_client(settings) as admin:
        topics = admin.describe_topics()
    return {t["name"]: len(t["partitions"]) for t in topics if not t.get("is_internal")}


def create_topics(settings: Settings, names: Iterable[str], partitions: int,
                  replication_factor: int | None = None) -> list[str]:
    """Create the topics that do not exist yet (broker-default replication unless given, then with
    `min_insync_replicas` of it); returns those created."""
    names = list(names)
    with admin_client(settings) as admin:
        existing = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
        for name in names:
            if name in existing and existing[name] != partitions:
                log.warning("topic %s exists with %d partitions (asked for %d); left as is",
                            name, existing[name], partitions)
        missing = [n for n in names if n not in existing]
        if not missing:
            return []
        spec: dict[str, object] = {"num_partitions": partitions}
        if replication_factor:
            spec |= {"replication_factor": replication_factor,
                     "configs": {"min.insync.replicas": str(min_insync_replicas(replication_factor))}}
        response = admin.create_topics({n: spec for n in missing}, raise_errors=False)
        created = []
        for topic in response["topics"]:
            code = topic["error_code"]
            if code == TopicAlreadyExistsError.errno:
                continue
            if code:
                raise KafkaError(f"cannot create topic {topic['name']}: {topic.get('error_message')}")
            created.append(topic["name"])
        admin.wait_for_topics(created, timeout_ms=30_000)
    return created


def ensure_topics(settings: Settings, partitions: int | None = None,
                  replication_factor: int | None = None) -> list[str]:
    """Create the topics of docs/spec.md missing at `settings.kafka_bootstrap`; returns the names created."""
    count = partitions or settings.kafka_partitions
    created = create_topics(settings, spec_topics(settings), count, replication_factor)
    for name in created:
        log.info("created topic %s (%d partitions, replication %s)", name, count, replication_factor or "default")
    return created


def delete_topics(settings: Settings, names: Iterable[str]) -> None:
    """Delete topics (those absent are ignored); the broker finishes deleting in the background."""
    with admin_client(settings) as admin:
        existing = set(admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            admin.delete_topics(doomed)


def count_topic(settings: Settings, topic: str) -> int:
    """How many messages a topic holds (end minus beginning offsets)."""
    consumer = KafkaConsumer(**kafka_python_options(settings), enable_auto_commit=False)  # no group: nothing to commit
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends, begins = consumer.end_offsets(partitions), consumer.beginning_offsets(partitions)
        return sum(ends[p] - begins[p] for p in partitions)
    finally:
        consumer.close()
