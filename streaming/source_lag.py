"""How far the stream is behind its topic, asked of Kafka when Prometheus scrapes: the records in the topic past the
offsets the query has processed. Unlike the per-batch figures, it does not freeze while no batch completes (a hung
batch, a store outage, a broker that accepts connections but serves nothing), so a stalled stream shows."""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from runtime.config import Settings
from runtime.kafka_clients import kafka_python_options

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_MS = 3_000  # a scrape must not hang on a broker that does not answer


def checkpoint_offsets(checkpoint: Path, topic: str) -> dict[int, int]:
    """The offsets of `topic` the checkpoint's last committed micro-batch processed up to (none for a new one)."""
    commits = [int(path.name) for path in (checkpoint / "commits").glob("[0-9]*")]
    if not commits:
        return {}
    try:
        return offsets_of(json.loads((checkpoint / "offsets" / str(max(commits))).read_text().splitlines()[-1]), topic)
    except (OSError, ValueError, IndexError):
        return {}


def offsets_of(end_offset: Any, topic: str) -> dict[int, int]:
    """A Kafka source's offsets (a progress report's `endOffset`, as JSON text or parsed) for `topic`, by partition."""
    parsed = json.loads(end_offset) if isinstance(end_offset, str) else end_offset
    return {int(partition): int(offset) for partition, offset in (parsed or {}).get(topic, {}).items()}


class SourceLag:
    """Records of one topic past the processed offsets; the Kafka client is made on first use and kept."""

    def __init__(self, settings: Settings, topic: str, processed: dict[int, int]) -> None:
        self.settings, self.topic, self.processed = settings, topic, dict(processed)
        self._consumer: KafkaConsumer | None = None
        self._lock = threading.Lock()

    def update(self, end_offset: Any) -> None:
        """Record a completed micro-batch's `endOffset` (its progress report's)."""
        offsets = offsets_of(end_offset, self.topic)
        with self._lock:
            self.processed.update(offsets)

    def behind(self) -> float:
        """Records in the topic the query has not processed (partitions it has not reached: from their start);
        NaN when Kafka does not answer."""
        with self._lock:
            try:
                consumer = self._consumer or self._connect()
                partitions = [TopicPartition(self.topic, p) for p in consumer.partitions_for_topic(self.topic) or ()]
                ends = consumer.end_offsets(partitions, timeout_ms=REQUEST_TIMEOUT_MS)
                starts = consumer.beginning_offsets([tp for tp in partitions if tp.partition not in self.processed],
                                                    timeout_ms=REQUEST_TIMEOUT_MS)
            except (KafkaError, OSError) as exc:
                log.debug("source lag of %s unknown: %s", self.topic, exc)
                self._close()
                return math.nan
            return float(sum(end - self.processed.get(tp.partition, starts.get(tp, end)) for tp, end in ends.items()))

    def _connect(self) -> KafkaConsumer:
        self._consumer = KafkaConsumer(**kafka_python_options(self.settings), enable_auto_commit=False,
                                       request_timeout_ms=REQUEST_TIMEOUT_MS, bootstrap_timeout_ms=REQUEST_TIMEOUT_MS,
                                       client_id="tripscore-stream-lag")
        return self._consumer

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()

    def close(self) -> None:
        """Close the Kafka client."""
        with self._lock:
            self._close()
