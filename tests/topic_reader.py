"""Reading a topic back in the tests: every message from the beginning, until the expected count arrived."""

from __future__ import annotations

import json
import time
from typing import Any

from kafka import KafkaConsumer

from runtime.config import Settings
from runtime.kafka_clients import kafka_python_options

Message = tuple[bytes | None, Any]
"""A message's key and decoded JSON value."""


def read_raw_topic(settings: Settings, topic: str, expected: int, timeout_s: float = 60.0,
                   ) -> list[tuple[bytes | None, bytes]]:
    """The topic's messages as (key, value) bytes, from the beginning until `expected` arrived and none came for
    2 s (so a message too many is read too), or `timeout_s` passed: no verdict rests on how soon the first comes."""
    consumer = KafkaConsumer(topic, **kafka_python_options(settings), auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=2000)
    messages: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < expected and time.monotonic() < deadline:
        messages += [(m.key, m.value) for m in consumer]
    consumer.close()
    return messages


def read_topic(settings: Settings, topic: str, expected: int, timeout_s: float = 30.0) -> list[Message]:
    """`read_raw_topic` with the values decoded from JSON."""
    return [(key, json.loads(value)) for key, value in read_raw_topic(settings, topic, expected, timeout_s)]
