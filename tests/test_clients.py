"""The clients against a real broker: the trip-event producer and the risk-score client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from scorer_helpers import score_request
from topic_reader import read_topic

from clients import InvalidRequest, RiskScoreClient, ScoreTimeout, TripEventProducer
from runtime.config import Settings
from runtime.kafka_clients import aiokafka_options, aiokafka_producer_options
from schemas.messages import encode

pytestmark = pytest.mark.kafka
SILENT = "silent-"  # the test responder never answers these


def offer(event_id: str, driver_id: str, **changes: object) -> dict:
    event = {"event_id": event_id, "event_type": "trip_offered", "ts": "2024-06-03T08:00:00Z", "driver_id": driver_id,
             "trip_id": f"t-{event_id}", "pickup_eta_min": 3.0, "surge_multiplier": 1.2, "est_duration_min": 12.0,
             "rider_rating": 4.8}
    return {**event, **changes}


def test_trip_event_producer_sends_valid_events_keyed_by_driver_and_returns_the_rest(
        kafka_settings: Settings, new_topic: Callable[..., str]) -> None:
    settings = kafka_settings.with_overrides(topic_trip_events=new_topic(partitions=2))
    valid = [offer("e1", "d1"), offer("e2", "d2"), offer("e3", "d1", ts=1_717_401_600_000)]
    invalid = [offer("e4", "d1", pickup_eta_min=-1), {"event_id": "e5"}, offer("e6", "d3", rating={1, 2})]
    with TripEventProducer(settings) as producer:
        rejected = producer.send_all([valid[0], invalid[0], valid[1], invalid[1], invalid[2], valid[2]])
        config = producer._producer.config
    assert (config["acks"], config["enable_idempotence"]) == (-1, True)  # acks=all
    assert [r.event for r in rejected] == invalid
    assert rejected[0].reason == "pickup_eta_min: must be >= 0, got -1"
    assert "driver_id: is required" in rejected[1].reason and "event_type: is required" in rejected[1].reason
    assert rejected[2].reason.startswith("<message>: not serializable as JSON")
    assert producer.sent == 3
    received = read_topic(settings, settings.topic_trip_events, len(valid))
    assert sorted((key, value["event_id"]) for key, value in received) == [(b"d1", "e1"), (b"d1", "e3"),
                                                                           (b"d2", "e2")]
    assert {value["event_id"]: value for _, value in received} == {e["event_id"]: e for e in valid}


async def respond_twice(settings: Settings, started: asyncio.Event) -> None:
    """A stand-in scorer: answers each request twice (at-least-once), plus a response nobody asked for."""
    consumer = AIOKafkaConsumer(settings.topic_score_requests, **aiokafka_options(settings), group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=5)
    producer = AIOKafkaProducer(**aiokafka_producer_options(settings))
    await consumer.start()
    await producer.start()
    started.set()
    try:
        async for record in consumer:
            request = orjson.loads(record.value)
            if request["request_id"].startswith(SILENT):
                continue
            answer = encode({"request_id": request["request_id"], "strategy": "distance_only",
                             "ranked": request["candidates"]})
            for key in (record.key, record.key, b"someone-else"):
                await producer.send_and_wait(settings.topic_risk_scores, answer, key=key)
    finally:
        await consumer.stop()
        await producer.stop()


def test_risk_score_client_correlates_by_request_id_drops_duplicates_and_times_out(
        kafka_settings: Settings, new_topic: Callable[..., str]) -> None:
    settings = kafka_settings.with_overrides(topic_score_requests=new_topic(partitions=2),
                                             topic_risk_scores=new_topic(partitions=3))
    duplicates: list[dict] = []

    async def scenario() -> None:
        started = asyncio.Event()
        responder = asyncio.create_task(respond_twice(settings, started))
        await started.wait()
        try:
            async with RiskScoreClient(settings, on_duplicate=duplicates.append) as client:
                requests = [score_request(f"r-{i}", [(f"d{i}", 1.0 + i)]) for i in range(20)]
                answers = await asyncio.gather(*(client.score(r, timeout=30) for r in requests))
                assert [a["request_id"] for a in answers] == [r["request_id"] for r in requests]
                assert [a["ranked"][0]["driver_id"] for a in answers] == [f"d{i}" for i in range(20)]
                with pytest.raises(ScoreTimeout, match=f"no response to request '{SILENT}1' on "
                                                       f"{settings.topic_risk_scores} within 0.5 s"):
                    await client.score(score_request(f"{SILENT}1", [("d1", 1.0)]), timeout=0.5)
                with pytest.raises(InvalidRequest, match="candidates: must have at least 1"):
                    await client.score(score_request("bad", []))
                for _ in range(100):  # the duplicates of the last answers may still be on their way
                    if client.duplicates == 20:
                        break
                    await asyncio.sleep(0.05)
                assert client.duplicates == 20 and not client._pending
        finally:
            responder.cancel()
            await asyncio.gather(responder, return_exceptions=True)

    asyncio.run(scenario())
    assert sorted(d["request_id"] for d in duplicates) == sorted(f"r-{i}" for i in range(20))
