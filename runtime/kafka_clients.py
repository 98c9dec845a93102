"""The one place where settings become each Kafka client's own options: kafka-python, aiokafka (and Faust), Spark.

Every producer, consumer and admin client of tripscore takes its connection options from here, so a connection
setting (bootstrap servers today, security tomorrow) is added once and reaches every client.
"""

from __future__ import annotations

from typing import Any

from runtime.config import Settings


def bootstrap_list(settings: Settings) -> list[str]:
    """The `host:port` entries of `TRIPSCORE_KAFKA_BOOTSTRAP`."""
    return [server.strip() for server in settings.kafka_bootstrap.split(",") if server.strip()]


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Connection options for kafka-python's `KafkaProducer`, `KafkaConsumer` and `KafkaAdminClient`."""
    return {"bootstrap_servers": bootstrap_list(settings)}


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Connection options for aiokafka's `AIOKafkaProducer` and `AIOKafkaConsumer`."""
    return {"bootstrap_servers": bootstrap_list(settings)}


FAUST_TRANSPORTS = {"aiokafka": "kafka", "confluent": "confluent"}
"""`scorer_transport` -> Faust's URL scheme: aiokafka (the default) or librdkafka through `confluent-kafka`."""


def faust_options(settings: Settings) -> dict[str, Any]:
    """Connection options for `faust.App`, on the transport `settings.scorer_transport` names."""
    try:
        scheme = FAUST_TRANSPORTS[settings.scorer_transport]
    except KeyError:
        known = tuple(FAUST_TRANSPORTS)
        raise ValueError(f"scorer transport {settings.scorer_transport!r} is not one of {known}") from None
    return {"broker": [f"{scheme}://{server}" for server in bootstrap_list(settings)]}


def spark_kafka_options(settings: Settings) -> dict[str, str]:
    """`kafka.`-prefixed options for Spark's Kafka source and sink."""
    return {"kafka.bootstrap.servers": ",".join(bootstrap_list(settings))}
