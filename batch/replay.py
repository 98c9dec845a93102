"""Replay TripEvents to Kafka at a fixed rate (keyed by driver_id, JSON values), optionally with planted bad events."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from tqdm import tqdm

from runtime.config import Settings
from runtime.kafka_clients import producer_options
from schemas.messages import encode

BAD_KINDS = ("not_json", "missing_driver_id", "negative_eta", "unknown_event_type", "bad_ts", "rating_out_of_range")


def bad_event(kind: str, index: int) -> tuple[bytes, bytes]:
    """(key, value) of one invalid `trip-events` message of the given kind, for DLQ tests."""
    base = {"event_id": f"bad-{index:06d}", "event_type": "trip_offered", "ts": 1_717_372_800_000 + index,
            "driver_id": f"dbad{index:04d}", "trip_id": f"tbad{index:06d}", "pickup_eta_min": 3.0,
            "surge_multiplier": 1.0, "est_duration_min": 12.0, "rider_rating": 4.8, "schema_version": 1}
    key = base["driver_id"].encode()
    if kind == "not_json":
        return key, b'{"event_id": "bad-' + str(index).encode() + b'", truncated'
    if kind == "missing_driver_id":
        del base["driver_id"]
    elif kind == "negative_eta":
        base["pickup_eta_min"] = -1.0
    elif kind == "unknown_event_type":
        base["event_type"] = "trip_teleported"
    elif kind == "bad_ts":
        base["ts"] = "yesterday"
    elif kind == "rating_out_of_range":
        base.update(event_type="trip_rated", rating=7)
    else:
        raise ValueError(f"unknown bad event kind {kind!r}; expected one of {BAD_KINDS}")
    return key, encode(base)


@dataclass(frozen=True)
class ReplayResult:
    """What a replay sent."""

    sent: int
    bad: int
    seconds: float

    def line(self, topic: str) -> str:
        """One human summary line."""
        rate = (self.sent + self.bad) / self.seconds if self.seconds > 0 else 0.0
        return f"replayed {self.sent:,} events (+{self.bad} invalid) to {topic} in {self.seconds:.1f} s = {rate:,.0f}/s"


def replay(messages: Iterable[Mapping[str, Any]], total: int, settings: Settings, topic: str, rate: float,
           bad: int = 0, progress: bool = True) -> ReplayResult:
    """Send `total` `messages` in order at `rate` per second (<= 0: as fast as possible), with `bad` invalid ones
    spread evenly in between; returns once the broker acknowledged every message."""
    bad_before = Counter((k + 1) * total // (bad + 1) for k in range(bad))  # message index -> bad ones before it
    planted = 0
    producer = KafkaProducer(**producer_options(settings), linger_ms=5, client_id="tripscore-replay")
    errors: list[BaseException] = []

    def send(key: bytes, value: bytes) -> None:
        producer.send(topic, key=key, value=value).add_errback(errors.append)

    started = time.perf_counter()
    sent = 0
    try:
        for message in tqdm(messages, total=total, desc=f"replay -> {topic}", unit="ev", disable=not progress,
                            mininterval=1.0):
            for _ in range(bad_before.pop(sent, 0)):
                send(*bad_event(BAD_KINDS[planted % len(BAD_KINDS)], planted))
                planted += 1
            send(str(message["driver_id"]).encode(), encode(message))
            sent += 1
            if rate > 0 and (ahead := sent / rate - (time.perf_counter() - started)) > 0.002:
                time.sleep(ahead)
        for _ in range(sum(bad_before.values())):  # a stream shorter than announced
            send(*bad_event(BAD_KINDS[planted % len(BAD_KINDS)], planted))
            planted += 1
        producer.flush()
    finally:
        producer.close()
    if errors:
        raise RuntimeError(f"{len(errors)} message(s) were not acknowledged: {errors[0]!r}")
    return ReplayResult(sent, planted, time.perf_counter() - started)
