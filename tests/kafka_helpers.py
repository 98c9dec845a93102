"""Reading a topic back in the tests: every message from the beginning, until the expected count arrived."""

from __future__ import annotations

import json
import time
from typing import Any

from kafka import KafkaConsumer


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[tuple[bytes | None, Any]]:
    """(key, decoded JSON value) of the topic's messages, once `expected` arrived or `timeout_s` passed."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000)
    messages: list[tuple[bytes | None, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < expected and time.monotonic() < deadline:
        messages += [(m.key, json.loads(m.value)) for m in consumer]
    consumer.close()
    return messages
