"""Spark reads and writes Kafka through the connector jars: batch read, Structured Streaming, batch write."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer
from pyspark.sql import DataFrame, SparkSession
from topic_reader import read_raw_topic

from runtime.config import Settings
from runtime.kafka_clients import producer_options, spark_kafka_options

pytestmark = [pytest.mark.kafka, pytest.mark.spark]


def produce(settings: Settings, topic: str, count: int) -> list[dict]:
    """`count` JSON messages keyed by one of 7 drivers; returns the values sent."""
    values = [{"driver_id": f"driver-{i % 7}", "seq": i} for i in range(count)]
    producer = KafkaProducer(**producer_options(settings))
    for value in values:
        producer.send(topic, key=value["driver_id"].encode(), value=json.dumps(value).encode())
    producer.flush()
    producer.close()
    return values


def read_topic(spark: SparkSession, settings: Settings, topic: str) -> DataFrame:
    """The whole topic as the connector's raw rows (key, value, topic, partition, offset, timestamp, ...)."""
    return (
        spark.read.format("kafka")
        .options(**spark_kafka_options(settings))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )


def test_batch_read_gets_every_message(spark: SparkSession, kafka_settings: Settings,
                                       new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=4)
    sent = produce(kafka_settings, topic, 500)

    raw = read_topic(spark, kafka_settings, topic)
    rows = raw.selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "partition").collect()

    assert len(rows) == len(sent)
    assert sorted((json.loads(r.value) for r in rows), key=lambda v: v["seq"]) == sent
    assert all(r.key == json.loads(r.value)["driver_id"] for r in rows)
    partitions_per_key = {k: {r.partition for r in rows if r.key == k} for k in {r.key for r in rows}}
    assert all(len(p) == 1 for p in partitions_per_key.values())


def test_structured_streaming_reads_the_topic(spark: SparkSession, kafka_settings: Settings,
                                              new_topic: Callable[..., str], tmp_path: Path) -> None:
    topic = new_topic(partitions=2)
    sent = produce(kafka_settings, topic, 200)

    stream = (
        spark.readStream.format("kafka")
        .options(**spark_kafka_options(kafka_settings))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr("CAST(value AS STRING) AS value")
    )
    query = (
        stream.writeStream.format("memory").queryName("streamed")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    assert query.awaitTermination(180), "the availableNow query did not finish"
    values = [json.loads(r.value) for r in spark.sql("SELECT value FROM streamed").collect()]
    assert sorted(values, key=lambda v: v["seq"]) == sent


def test_batch_write_lands_in_the_topic(spark: SparkSession, kafka_settings: Settings,
                                        new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=1)
    (
        spark.range(100).selectExpr("CAST(id AS STRING) AS key", "CAST(id * 2 AS STRING) AS value")
        .write.format("kafka")
        .options(**spark_kafka_options(kafka_settings))
        .option("topic", topic)
        .save()
    )

    received = {int(key): int(value) for key, value in read_raw_topic(kafka_settings, topic, 100)}
    assert received == {i: 2 * i for i in range(100)}
