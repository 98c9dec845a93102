"""A stream that is up but stuck shows it: while its store refuses writes (a batch retrying, below the give-up time)
and records wait in its topic, the scrape-time gauges `tripscore_stream_last_batch_age_seconds` and
`tripscore_stream_offsets_behind` grow, as `TripscoreStreamStalled` expects (its rule is unit-tested with promtool,
tests/test_deploy.py); once the store is back they fall to a fresh batch and nothing behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_streaming_job import LockedSQLite, produce, records

from batch.generate import generate_city
from runtime.config import load_settings
from runtime.processes import ServiceProcess, free_port, http_get

pytestmark = [pytest.mark.kafka, pytest.mark.spark]
STUCK_S = 20.0


def gauges(port: int) -> dict[str, float]:
    """The stream's gauges by name, scraped now (empty while its port does not answer)."""
    body = http_get(f"http://127.0.0.1:{port}/metrics") or ""
    return {sample.name: sample.value for family in text_string_to_metric_families(body)
            for sample in family.samples if family.type == "gauge"}


def test_a_stuck_stream_shows_in_its_gauges_and_recovers(kafka_bootstrap: str, new_topic, tmp_path: Path) -> None:
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, sqlite_path=tmp_path / "features.db",
                             topic_trip_events=new_topic(partitions=2), topic_trip_events_dlq=new_topic(partitions=1))
    messages = list(generate_city(seed=9, drivers=10, days=1).messages())
    port = free_port()
    job = ServiceProcess(["stream", "--checkpoint", str(tmp_path / "checkpoint"), "--metrics-port", str(port),
                          "--trigger-ms", "200"],
                         {"kafka_bootstrap": kafka_bootstrap, "home": tmp_path / "home",
                          "sqlite_path": settings.sqlite_file, "topic_trip_events": settings.topic_trip_events,
                          "topic_trip_events_dlq": settings.topic_trip_events_dlq, "stream_store_giveup_s": 300},
                         tmp_path / "stream.log").start()
    store_down = LockedSQLite(settings)
    try:
        produce(settings, messages[:100])
        job.wait_until(lambda: gauges(port).get("tripscore_stream_offsets_behind") == 0.0, "the first 100", 240)
        assert any(records(settings, [m["driver_id"] for m in messages[:100]]).values())
        store_down.begin()
        locked_at = time.monotonic()
        produce(settings, messages[100:])
        time.sleep(max(0.0, STUCK_S - (time.monotonic() - locked_at)))
        stuck = gauges(port)
        assert stuck["tripscore_stream_offsets_behind"] == len(messages) - 100, stuck
        assert stuck["tripscore_stream_last_batch_age_seconds"] > STUCK_S / 2, stuck
        store_down.end()
        job.wait_until(lambda: gauges(port).get("tripscore_stream_offsets_behind") == 0.0, "the catch-up", 240)
        assert gauges(port)["tripscore_stream_last_batch_age_seconds"] < STUCK_S / 2
    finally:
        store_down.end()
        job.stop(timeout=10)
