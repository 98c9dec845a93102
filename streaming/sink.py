"""The foreachBatch sinks: `BatchSink` runs and times a micro-batch; `Sink` writes dead letters to the DLQ topic and
driver records to the online store, in batches.

A store or broker error is retried with backoff inside the micro-batch, whose offsets are not committed until
every write succeeded; only an outage longer than `TRIPSCORE_STREAM_STORE_GIVEUP_S` fails the batch (and so the
query), which is then replayed on restart: the store's newer-wins makes replayed writes no-ops (dead letters are
at least once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import orjson
import pyarrow as pa
from kafka import KafkaProducer
from kafka.errors import KafkaError
from pyspark.sql import DataFrame
from pyspark.sql.streaming import StreamingQuery

from featurestore import open_store
from featurestore.base import BadInput, Record, StoreError
from runtime.config import Settings
from runtime.kafka_clients import producer_options
from runtime.retry import retry
from streaming.metrics import SinkStats, lag_quantiles, last_execution
from streaming.stateful import DUPLICATE, EVICTED, INVALID, LATE, RECORD

SEND_TIMEOUT_S = 30.0
log = logging.getLogger("streaming")


class BatchSink:
    """Callable for `writeStream.foreachBatch`: computes the micro-batch (`toArrow`), hands the table to `write`
    and reports its `SinkStats` with the time the computation and the writes took (and, for the debug breakdown,
    the Python workers' time)."""

    def __init__(self, on_batch: Callable[[SinkStats], None]) -> None:
        self.on_batch = on_batch
        self.query: StreamingQuery | None = None  # set once started: its executions hold the Python workers' times
        self.failure: BaseException | None = None  # why the last failed batch failed, as our code saw it

    def __call__(self, frame: DataFrame, batch_id: int) -> None:
        try:
            started = time.monotonic()
            table = frame.toArrow()
            computed = time.monotonic()
            stats = self.write(table, batch_id)
        except BaseException as exc:
            self.failure = exc
            raise
        stats.compute_s, stats.write_s = computed - started, time.monotonic() - computed
        if self.query is not None and log.isEnabledFor(logging.DEBUG):  # for the breakdown, a debug line
            stats.execution = last_execution(self.query)
        self.on_batch(stats)

    def write(self, table: pa.Table, batch_id: int) -> SinkStats:
        """Write one computed micro-batch; raises to fail it."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sink holds."""


class Sink(BatchSink):
    """Dead letters to the DLQ topic (acknowledged), driver records to the store; owns the DLQ producer."""

    def __init__(self, settings: Settings, write_batch: int, on_batch: Callable[[SinkStats], None],
                 stop: threading.Event | None = None) -> None:
        super().__init__(on_batch)
        self.settings = settings
        self.write_batch = write_batch
        self.stop = stop  # set by a shutdown request: a retrying batch gives up at once (and is replayed later)
        self._producer: KafkaProducer | None = None

    @property
    def producer(self) -> KafkaProducer:
        """The DLQ producer, created on the first dead letter."""
        if self._producer is None:
            self._producer = KafkaProducer(**producer_options(self.settings), linger_ms=5, retries=5,
                                           client_id="tripscore-stream-dlq")
        return self._producer

    def dead_letter(self, letters: list[tuple[bytes | None, bytes]]) -> None:
        """Send to the DLQ topic and wait for every acknowledgement; raises on any failure."""
        futures = [self.producer.send(self.settings.topic_trip_events_dlq, key=key, value=value)
                   for key, value in letters]
        self.producer.flush(timeout=SEND_TIMEOUT_S)
        for future in futures:
            future.get(timeout=SEND_TIMEOUT_S)

    def store_write(self, records: list[Record]) -> int:
        """Write records to the store in chunks of `write_batch`; returns how many were applied."""
        store = open_store(self.settings)
        return sum(store.write(records[start : start + self.write_batch]).written
                   for start in range(0, len(records), self.write_batch))

    def _retried(self, action: Callable[[], object], what: str, retry_on: tuple[type[BaseException], ...]) -> object:
        return retry(action, what=what, give_up_s=self.settings.stream_store_giveup_s, retry_on=retry_on,
                     fatal=(BadInput,), stop=self.stop)

    def write(self, table: pa.Table, batch_id: int) -> SinkStats:
        kinds = table.column("kind").to_pylist()
        keys = table.column("key").to_pylist()
        payloads = table.column("payload").to_pylist()
        letters = [(keys[i], payloads[i]) for i, kind in enumerate(kinds) if kind in (INVALID, LATE)]
        if letters:
            self._retried(lambda: self.dead_letter(letters), f"dead letters of batch {batch_id}", (KafkaError,))
        records, times = [], []
        for key, payload in ((keys[i], payloads[i]) for i, kind in enumerate(kinds) if kind == RECORD):
            bins, accepted_ms = orjson.loads(payload)
            records.append((key.decode(), bins))
            times += accepted_ms
        written = self._retried(lambda: self.store_write(records), f"store write of batch {batch_id}",
                                (StoreError,))
        written_ms = time.time_ns() // 1_000_000
        return SinkStats(
            batch_id=batch_id,
            records=len(records),
            written=written,
            invalid=kinds.count(INVALID),
            late=kinds.count(LATE),
            duplicates=sum(int(payloads[i]) for i, kind in enumerate(kinds) if kind == DUPLICATE),
            evicted=sum(int(payloads[i]) for i, kind in enumerate(kinds) if kind == EVICTED),
            lag_s=lag_quantiles([written_ms - t for t in times]),
        )

    def close(self) -> None:
        """Flush and close the DLQ producer."""
        if self._producer is not None:
            self._producer.close(timeout=SEND_TIMEOUT_S)
            self._producer = None
