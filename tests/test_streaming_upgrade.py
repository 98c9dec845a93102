"""Upgrading the stream: a checkpoint written by the version that kept the drivers' state in Spark
(`transformWithState` over state buckets) resumes under this one from its committed offsets.

`tests/fixtures/spark-state-checkpoint` was made with that version: a generated city's first 879 events streamed and
committed, the next 660 streamed and written to the store with the last micro-batch's commit removed (a kill after
the store write, before the commit), and the store's records then (`records.json`). This test produces the same
events into a new topic (the same offsets), resumes from that checkpoint with this version, then streams the rest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_streaming_job import dead_letters, produce, records, stream

from batch.generate import generate_city
from featurestore import open_store
from runtime.config import load_settings
from runtime.topics import admin_client

pytestmark = [pytest.mark.kafka, pytest.mark.spark]
FIXTURE = Path(__file__).parent / "fixtures" / "spark-state-checkpoint"


def copy_checkpoint(topic: str, to: Path) -> None:
    """The fixture's checkpoint under `to`, its source topic renamed `topic` (the files' checksums dropped)."""
    old = json.loads((FIXTURE / "fixture.json").read_text())["topic"].encode()
    shutil.copytree(FIXTURE / "checkpoint", to)
    for path in [*to.glob("offsets/[0-9]*"), to / "sources" / "0" / "0"]:
        path.write_bytes(path.read_bytes().replace(old, topic.encode()))
        path.with_name(f".{path.name}.crc").unlink()


def end_offsets(settings, topic: str) -> dict[str, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        return {str(tp.partition): offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def test_a_checkpoint_of_the_spark_state_version_resumes_without_loss_or_double_counting(
        spark, kafka_bootstrap, new_topic, tmp_path) -> None:
    fixture = json.loads((FIXTURE / "fixture.json").read_text())
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, sqlite_path=tmp_path / "features.db",
                             topic_trip_events=new_topic(partitions=2), topic_trip_events_dlq=new_topic(partitions=1))
    messages = list(generate_city(seed=fixture["seed"], drivers=fixture["drivers"], days=fixture["days"]).messages())
    assert len(messages) == fixture["messages"]
    produce(settings, messages[: fixture["written_through"]])
    checkpoint = tmp_path / "checkpoint"
    copy_checkpoint(settings.topic_trip_events, checkpoint)
    planned = json.loads((checkpoint / "offsets" / "5").read_text().splitlines()[-1])[settings.topic_trip_events]
    assert end_offsets(settings, settings.topic_trip_events) == {p: int(o) for p, o in planned.items()}, \
        "the events must land at the offsets the fixture's checkpoint was written with"
    saved = json.loads((FIXTURE / "records.json").read_text())
    open_store(settings).write(list(saved.items()))  # the store as the killed run left it
    produce(settings, messages[fixture["written_through"] :])

    metrics = stream(spark, settings, tmp_path, max_offsets=300)

    by_driver: dict[str, list] = {}
    for m in messages:
        by_driver.setdefault(m["driver_id"], []).append((m["ts"], m["event_id"], m["event_type"], m.get("rating")))
    from features.fold import fold

    assert records(settings, sorted(by_driver)) == {d: fold(events).to_bins() for d, events in by_driver.items()}
    sample = metrics.registry.get_sample_value
    replayed_batch = fixture["written_through"] - sum(
        int(o) for o in json.loads((checkpoint / "offsets" / "4").read_text().splitlines()[-1])[
            settings.topic_trip_events].values())
    # the uncommitted batch is replayed: its events are in the records already, so each is a duplicate
    assert sample("tripscore_stream_events_total", {"outcome": "in"}) == len(messages) - fixture["written_through"] \
        + replayed_batch
    assert sample("tripscore_stream_events_total", {"outcome": "duplicate"}) == replayed_batch
    assert sample("tripscore_stream_events_total", {"outcome": "late"}) == 0
    assert dead_letters(settings, 0) == []
    with admin_client(settings):  # the topics go with the test (`new_topic`)
        pass
