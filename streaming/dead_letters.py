"""Dead letters to `trip-events-dlq` from wherever the records are folded: one producer per process, acknowledged
sends retried through broker outages shorter than the give-up time."""

from __future__ import annotations

import os
import threading

from kafka import KafkaProducer
from kafka.errors import KafkaError

from runtime.config import Settings
from runtime.kafka_clients import producer_options
from runtime.retry import retry

SEND_TIMEOUT_S = 30.0
_lock = threading.Lock()
_producers: dict[tuple[int, str], KafkaProducer] = {}

Letter = tuple[bytes | None, bytes]
"""(the original record's key, the encoded DeadLetter)."""


def _producer(settings: Settings) -> KafkaProducer:
    """This process's DLQ producer for the settings' cluster, created on first use (a forked child makes its own)."""
    key = (os.getpid(), settings.kafka_bootstrap)
    with _lock:
        producer = _producers.get(key)
        if producer is None:
            producer = _producers[key] = KafkaProducer(**producer_options(settings), linger_ms=5, retries=5,
                                                       client_id="tripscore-stream-dlq")
    return producer


def _send(settings: Settings, letters: list[Letter]) -> None:
    producer = _producer(settings)
    futures = [producer.send(settings.topic_trip_events_dlq, key=key, value=value) for key, value in letters]
    producer.flush(timeout=SEND_TIMEOUT_S)
    for future in futures:
        future.get(timeout=SEND_TIMEOUT_S)


def send_dead_letters(settings: Settings, letters: list[Letter], what: str) -> None:
    """Send `letters` and wait until the broker acknowledged every one, retrying for the store give-up time
    (`TRIPSCORE_STREAM_STORE_GIVEUP_S`); a send may repeat after a failure (dead letters are at least once)."""
    if letters:
        retry(lambda: _send(settings, letters), what=what, give_up_s=settings.stream_store_giveup_s,
              retry_on=(KafkaError,))

