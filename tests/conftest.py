"""Session-wide services for the tests: a Kafka broker, an Aerospike server and a Spark session."""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings
from properties import FUZZ, FUZZ_FACTOR

from runtime import kafka_local
from runtime.config import Settings, load_settings
from runtime.topics import admin_client, broker_ready, create_topics, ensure_topics

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"  # Kafka 3.9, the broker version `make jars` fetches
AEROSPIKE_IMAGE = "aerospike/aerospike-server:8.1.2.3"
NO_AEROSPIKE = "no Aerospike server: set AEROSPIKE_HOSTS=host:port or install Docker"

# Hypothesis profiles (README, Tests). None has a timing check (no deadline, no too_slow health check), so no
# verdict depends on the machine's load. `ci` (CI set, as `make test` does) is derandomized without an example
# database: the same examples on every run. `fuzz` (`make fuzz`, through --hypothesis-profile) explores with random
# seeds and `FUZZ_FACTOR` times the examples. `dev` (anything else) is random and replays failures from .hypothesis/.
_UNTIMED = settings(settings.get_profile("default"), deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", _UNTIMED, derandomize=True, database=None, print_blob=True)
settings.register_profile(FUZZ, _UNTIMED, max_examples=FUZZ_FACTOR * _UNTIMED.max_examples, print_blob=True)
settings.register_profile("dev", _UNTIMED)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@functools.cache
def docker_available() -> bool:
    """True when a Docker engine answers a ping; any error means no."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _kafka(stack: contextlib.ExitStack) -> str:
    """Bootstrap of the session's broker: KAFKA_BOOTSTRAP, a running local one, Docker, or one started here."""
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP"):
        return bootstrap
    settings = load_settings()
    if broker_ready(settings):
        return settings.kafka_bootstrap
    if docker_available():
        from testcontainers.community.kafka import KafkaContainer

        return stack.enter_context(KafkaContainer(KAFKA_IMAGE).with_kraft()).get_bootstrap_server()
    kafka_local.up(settings)
    stack.callback(kafka_local.stop, settings)
    return settings.kafka_bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A broker for the whole session, with the topics of docs/spec.md; TRIPSCORE_KAFKA_BOOTSTRAP points at it."""
    with contextlib.ExitStack() as stack:
        bootstrap = _kafka(stack)
        env = stack.enter_context(pytest.MonkeyPatch.context())
        env.setenv("TRIPSCORE_KAFKA_BOOTSTRAP", bootstrap)
        ensure_topics(load_settings())
        yield bootstrap


@pytest.fixture(scope="session")
def kafka_settings(kafka_bootstrap: str) -> Settings:
    """Settings whose Kafka clients reach the session's broker."""
    return load_settings(kafka_bootstrap=kafka_bootstrap)


@pytest.fixture
def new_topic(kafka_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Factory of topics unique to this test (`new_topic(partitions=4)`), deleted when the test ends."""
    created: list[str] = []

    def make(partitions: int = 4) -> str:
        name = f"test-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
        create_topics(kafka_settings, [name], partitions)
        created.append(name)
        return name

    yield make
    if created:
        with admin_client(kafka_settings) as admin:
            admin.delete_topics(created, raise_errors=False)


@pytest.fixture(scope="session")
def aerospike_hosts() -> Iterator[str]:
    """`host:port` of an Aerospike server with the `features` namespace: AEROSPIKE_HOSTS, else Docker, else skip."""
    if hosts := os.environ.get("AEROSPIKE_HOSTS"):
        yield hosts
        return
    if not docker_available():
        pytest.skip(NO_AEROSPIKE)
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    ready = LogMessageWaitStrategy("service ready").with_startup_timeout(120)
    container = DockerContainer(AEROSPIKE_IMAGE).with_env("NAMESPACE", "features").with_exposed_ports(3000)
    with container.waiting_for(ready):
        yield f"{container.get_container_host_ip()}:{container.get_exposed_port(3000)}"


@pytest.fixture(scope="session")
def aerospike_node(aerospike_hosts: str) -> str:
    """`host:port` of a one-node Aerospike cluster, for the outage tests that cut a proxy in front of it: the client
    reaches a larger cluster's other nodes at their own addresses, past the proxy (skipped then, with that reason)."""
    if len([host for host in aerospike_hosts.split(",") if host.strip()]) > 1:
        pytest.skip("a proxy in front of one seed cannot cut a cluster of several nodes (the client reaches the others "
                    "directly): these outages run with one node's AEROSPIKE_HOSTS; tests/test_aerospike_cluster.py "
                    "kills a node of the cluster instead")
    return aerospike_hosts


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One local SparkSession with the Kafka connector for the session (runtime.spark defaults)."""
    from runtime.spark import spark_session

    session = spark_session(load_settings(), "tripscore-tests")
    yield session
    session.stop()
