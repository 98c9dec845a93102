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


def read_topic(settings: Settings, topic: str, expected: int, timeout_s: float = 30.0) -> list[Message]:
    """The topic's messages, once `expected` arrived or `timeout_s` passed."""
    consumer = KafkaConsumer(topic, **kafka_python_options(settings), auto_offset_reset="earliest",
                             consumer_timeout_ms=2000)
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < expected and time.monotonic() < deadline:
        messages += [(m.key, json.loads(m.value)) for m in consumer]
    consumer.close()
    return messages
