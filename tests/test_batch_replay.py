"""`generate --to-kafka`: events replayed to a real broker, keyed by driver, with planted invalid ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from topic_reader import read_raw_topic

from batch.eventlog import to_messages
from batch.generate import generate_city
from batch.replay import BAD_KINDS, bad_event, replay
from runtime.config import Settings
from schemas.messages import decode_trip_event
from tripscore.cli import main

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_every_bad_kind_is_rejected_by_the_contract(kind: str) -> None:
    _, value = bad_event(kind, 1)
    normalised, problems = decode_trip_event(value)
    assert normalised is None and problems


def test_replay_sends_every_event_keyed_by_driver_with_the_bad_ones(
    kafka_settings: Settings, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    city = generate_city(seed=2, drivers=8, days=1, workers=1)
    events = city.events.slice(0, 300)
    result = replay(to_messages(events), events.num_rows, kafka_settings, topic, rate=0, bad=4, progress=False)
    assert (result.sent, result.bad) == (300, 4)
    received = read_raw_topic(kafka_settings, topic, 304)
    assert len(received) == 304
    decoded = [(key, decode_trip_event(value)[0]) for key, value in received]
    good = [(key, event) for key, event in decoded if event is not None]
    assert len(good) == 300
    assert all(key == event["driver_id"].encode() for key, event in good)
    expected_ids = events.column("event_id").to_pylist()
    for driver in set(events.column("driver_id").to_pylist()):  # per-key order is kept
        mine = [e["event_id"] for _, e in good if e["driver_id"] == driver]
        assert mine == [i for i, d in zip(expected_ids, events.column("driver_id").to_pylist(), strict=True)
                        if d == driver]


def test_cli_generate_writes_the_log_requests_and_replays_the_live_days(
    kafka_settings: Settings, new_topic: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = new_topic(partitions=1)
    monkeypatch.setenv("TRIPSCORE_HOME", str(tmp_path))
    monkeypatch.setenv("TRIPSCORE_TOPIC_TRIP_EVENTS", topic)
    argv = ["generate", "--drivers", "6", "--days", "2", "--live-days", "1", "--requests", "7", "--to-kafka",
            "--rate", "0", "--bad", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    city = json.loads((tmp_path / "events" / "_city.json").read_text())
    history = ds.dataset(str(tmp_path / "events"), format="parquet").to_table()
    assert history.num_rows < city["events"] and max(history.column("ts_ms").to_pylist()) < city["history_until_ms"]
    assert len((tmp_path / "requests.jsonl").read_text().splitlines()) == 7
    live = city["events"] - history.num_rows
    assert f"replayed {live:,} events (+2 invalid) to {topic}" in out and "oracle AUC" in out
    values = [value for _, value in read_raw_topic(kafka_settings, topic, live + 2)]
    assert len(values) == live + 2
    valid = [decode_trip_event(v)[0] for v in values if not decode_trip_event(v)[1]]
    assert all(event["ts_ms"] >= city["history_until_ms"] for event in valid)
