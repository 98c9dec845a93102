"""The trip-event producer: validates each event against the contract, sends the valid ones keyed by driver_id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer

from runtime.config import Settings
from runtime.kafka_clients import producer_options
from schemas.fields import Problem
from schemas.messages import MESSAGE, decode_trip_event, describe_problems, encode


@dataclass(frozen=True)
class Rejected:
    """An event that was not sent, with every problem the contract found in it."""

    event: Any
    problems: list[Problem]

    @property
    def reason(self) -> str:
        """The problems on one line: `field: reason; field: reason`."""
        return describe_problems(self.problems)


class DeliveryError(RuntimeError):
    """The broker did not acknowledge some sent events."""


class TripEventProducer:
    """Sends TripEvents to `trip-events`: validated first, keyed by driver_id, `acks=all`, idempotent, batched.

    An invalid event is returned as `Rejected` and never sent; `flush()` raises `DeliveryError` when the broker
    refused any event sent since the last flush.
    """

    def __init__(self, settings: Settings, *, topic: str | None = None, linger_ms: int = 5,
                 batch_size: int = 64 * 1024, client_id: str = "tripscore-events") -> None:
        self.topic = topic or settings.topic_trip_events
        self.sent = 0
        self._failures: list[BaseException] = []
        self._producer = KafkaProducer(**producer_options(settings), linger_ms=linger_ms, batch_size=batch_size,
                                       client_id=client_id)

    def send(self, event: Mapping[str, Any]) -> Rejected | None:
        """Queue one event for sending, or return why it is rejected. What is checked is the JSON that is sent."""
        try:
            raw = encode(event)
        except (TypeError, ValueError) as exc:
            return Rejected(event, [(MESSAGE, f"not serializable as JSON: {exc}")])
        validated, problems = decode_trip_event(raw)
        if validated is None:
            return Rejected(event, problems)
        self._producer.send(self.topic, key=validated["driver_id"].encode(), value=raw).add_errback(
            self._failures.append)
        self.sent += 1
        return None

    def send_all(self, events: Iterable[Mapping[str, Any]]) -> list[Rejected]:
        """Queue every valid event; the rejected ones, in order."""
        return [rejected for event in events if (rejected := self.send(event)) is not None]

    def flush(self, timeout: float | None = None) -> None:
        """Block until the broker acknowledged every queued event; `DeliveryError` if it refused any."""
        self._producer.flush(timeout)
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError(f"{len(failures)} event(s) not acknowledged by the broker: {failures[0]!r}")

    def close(self) -> None:
        """Flush, then release the connection."""
        try:
            self.flush()
        finally:
            self._producer.close()

    def __enter__(self) -> TripEventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
