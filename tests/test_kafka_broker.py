"""The Kafka broker with the clients tripscore uses: kafka-python, aiokafka (Faust's client) and the CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from runtime.config import Settings, load_settings
from runtime.kafka_clients import aiokafka_options, aiokafka_producer_options, kafka_python_options, producer_options
from runtime.topics import count_topic, ensure_topics, spec_topics
from tripscore import cli

pytestmark = pytest.mark.kafka


def test_kafka_python_round_trip_keeps_order_per_key(kafka_settings: Settings,
                                                     new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=4)
    keys = [f"driver-{k}" for k in range(10)]
    producer = KafkaProducer(**producer_options(kafka_settings), linger_ms=5)
    assert producer.config["enable_idempotence"] and producer.config["acks"] == -1
    for seq in range(100):
        for key in keys:
            producer.send(topic, key=key.encode(), value=json.dumps({"seq": seq}).encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(**kafka_python_options(kafka_settings), group_id=None, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(4)])
    consumer.seek_to_beginning()
    seqs: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    deadline = time.monotonic() + 60
    while sum(map(len, seqs.values())) < 1000 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                seqs[record.key.decode()].append(json.loads(record.value)["seq"])
                partitions[record.key.decode()].add(record.partition)
    consumer.close()

    assert sum(map(len, seqs.values())) == 1000
    assert {key: seq for key, seq in seqs.items()} == {key: list(range(100)) for key in keys}
    assert all(len(p) == 1 for p in partitions.values()), "a key's messages must share one partition"


def test_aiokafka_produces_and_consumes_in_a_group(kafka_settings: Settings, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=2)
    sent = [f"message-{i}".encode() for i in range(50)]

    async def round_trip() -> list[bytes]:
        producer = AIOKafkaProducer(**aiokafka_producer_options(kafka_settings))
        await producer.start()
        assert producer._txn_manager is not None, "the producer is idempotent"
        try:
            for value in sent:
                await producer.send(topic, key=b"driver-1", value=value)
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, **aiokafka_options(kafka_settings), group_id=f"group-{topic}",
                                    auto_offset_reset="earliest")
        await consumer.start()
        received: list[bytes] = []
        try:
            async with asyncio.timeout(60):
                while len(received) < len(sent):
                    for records in (await consumer.getmany(timeout_ms=1000)).values():
                        received.extend(r.value for r in records)
            await consumer.commit()
        finally:
            await consumer.stop()
        return received

    assert asyncio.run(round_trip()) == sent


def test_counting_a_topic_warns_of_nothing(kafka_settings: Settings, new_topic: Callable[..., str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    """`count_topic` (the demo's summary uses it) asks no group to commit, so kafka-python has nothing to disable."""
    topic = new_topic(partitions=2)
    with caplog.at_level(logging.WARNING, logger="kafka"):
        assert count_topic(kafka_settings, topic) == 0
    assert not [record.getMessage() for record in caplog.records if "auto-commit" in record.getMessage()]


def test_topics_create_is_idempotent(kafka_bootstrap: str) -> None:
    assert ensure_topics(load_settings()) == []


def test_kafka_status_lists_the_spec_topics(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kafka", "status"]) == 0
    out = capsys.readouterr().out
    assert f"bootstrap:    {kafka_bootstrap} (reachable)" in out
    for name in spec_topics(load_settings()):
        assert re.search(rf"^  {re.escape(name)} +\d+ partitions$", out, re.MULTILINE), out


def test_a_local_cluster_id_is_16_bytes_and_never_reads_as_an_option() -> None:
    """One id in 64 would start with `-`, which the storage tool takes for an option (found by a failed CI run)."""
    from runtime.kafka_local import _cluster_id

    ids = [_cluster_id() for _ in range(3_000)]
    assert not any(cluster_id.startswith("-") for cluster_id in ids)
    assert {len(base64.urlsafe_b64decode(cluster_id + "==")) for cluster_id in ids} == {16}
