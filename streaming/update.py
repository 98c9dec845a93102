"""Stage 2 of the stream, on the executors: a partition's records folded onto their drivers' store records.

Per partition of a micro-batch: the records are decoded and grouped by driver (`parse`), the drivers' records
read in one batch read (`OnlineStore.read_current`), each driver's events folded onto its record
(`driver_state.advance`), the dead letters sent and acknowledged, and the changed records written back in one
batch write whose compare-and-set (`OnlineStore.compare_and_set`) makes a concurrent write lose instead of
overwrite: the drivers whose record moved on since the read are read and folded again. A replayed partition (a
restart, a retried or speculative task) finds its events' offsets in the records and writes nothing. Nothing of a
record goes through the Spark driver: each partition yields one row of counts and lags (`STATS_SCHEMA`).

Order: dead letters are acknowledged before the records that skip past them are written, so a crash between the two
repeats the dead letters (at least once) and never loses one. Store and broker errors are retried with backoff for
`TRIPSCORE_STREAM_STORE_GIVEUP_S`; past it the task fails with `GaveUp`, the batch is not committed, and its replay
on restart changes only what was not yet written.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from featurestore import open_store
from featurestore.base import BadInput, Current, OnlineStore, StoreError, Update, now_ms
from runtime.config import Settings
from runtime.retry import retry
from schemas.messages import MESSAGE, dead_letter, encode
from streaming.dead_letters import Letter, send_dead_letters
from streaming.driver_state import LATE_FIELD, Advance, advance, source_tag
from streaming.parse import KafkaEvent, Parsed, parse

COUNTS = ("records", "invalid", "late", "duplicates", "replayed", "drivers", "written", "conflicts")
TIMES = ("parse_ms", "read_ms", "fold_ms", "dlq_ms", "write_ms")
STATS_SCHEMA = pa.schema([*((name, pa.int64()) for name in COUNTS), *((name, pa.float64()) for name in TIMES),
                          ("lags_ms", pa.list_(pa.int64()))])
"""One row per partition: its counts, where its time went (ms), and each applied event's lag (event time to write)."""
STATS_DDL = ", ".join([*(f"{name} long" for name in COUNTS), *(f"{name} double" for name in TIMES),
                       "lags_ms array<long>"])
"""`STATS_SCHEMA` as Spark's schema of the query's output."""
ArrowFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


@dataclass
class PartitionStats:
    """What one partition's update did (`STATS_SCHEMA`)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    times: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMES, 0.0))
    lags_ms: list[int] = field(default_factory=list)

    def batch(self) -> pa.RecordBatch:
        """The stats as a one-row Arrow batch."""
        row = {**{k: [v] for k, v in self.counts.items()}, **{k: [v] for k, v in self.times.items()},
               "lags_ms": [self.lags_ms]}
        return pa.RecordBatch.from_pydict(row, schema=STATS_SCHEMA)


class Clock:
    """Adds the milliseconds since the last tick to a named time of `PartitionStats`."""

    def __init__(self, stats: PartitionStats) -> None:
        self.stats, self.last = stats, time.perf_counter()

    def tick(self, name: str) -> None:
        now = time.perf_counter()
        self.stats.times[name] += (now - self.last) * 1000
        self.last = now


def _letter(event: KafkaEvent, problems: Sequence[tuple[str, str]], topic: str) -> Letter:
    letter = dead_letter(event.value, problems, stage="stream", topic=topic, partition=event.partition,
                         offset=event.offset)
    return event.key, encode(letter)


def _fold(current: Current, events: list[KafkaEvent], lateness_ms: int, source: int) -> tuple[Advance, str | None]:
    """`advance` behind the per-driver guard: a driver whose fold raises keeps its record, and the reason is returned
    for its events' dead letters."""
    try:
        return advance(current.bins, events, lateness_ms, source), None
    except Exception as exc:
        return Advance(), f"could not be applied: {type(exc).__name__}: {exc}"


class PartitionUpdate:
    """One partition's update: `run` over its parsed records, against `store`, sending dead letters with `send`."""

    def __init__(self, settings: Settings, topic: str, lateness_ms: int, store: OnlineStore,
                 send: Callable[[list[Letter], str], None]) -> None:
        self.settings, self.topic, self.lateness_ms, self.store, self.send = settings, topic, lateness_ms, store, send
        self.source = source_tag(topic)

    def _retried(self, action: Callable[[], Any], what: str) -> Any:
        return retry(action, what=what, give_up_s=self.settings.stream_store_giveup_s, retry_on=(StoreError,),
                     fatal=(BadInput,))

    def run(self, parsed: Parsed, stats: PartitionStats, clock: Clock) -> None:
        """Fold every driver of `parsed` onto its record until every changed record is written."""
        counts = stats.counts
        counts["records"], counts["invalid"], counts["drivers"] = (parsed.records, len(parsed.invalid),
                                                                   len(parsed.by_driver))
        letters = [_letter(event, problems, self.topic) for event, problems in parsed.invalid]
        sent: set[tuple[int, int]] = set()  # (partition, offset) of the late events dead-lettered so far
        outcomes: dict[str, Advance] = {}
        todo = list(parsed.by_driver)
        while todo:
            current = self._retried(lambda ids=todo: self.store.read_current(ids), f"read of {len(todo)} records")
            clock.tick("read_ms")
            updates: list[Update] = []
            for driver_id, record in zip(todo, current, strict=True):
                events = parsed.by_driver[driver_id]
                outcome, failure = _fold(record, events, self.lateness_ms, self.source)
                outcomes[driver_id] = outcome
                if failure is not None:
                    letters += [_letter(e, [(MESSAGE, failure)], self.topic) for e in events
                                if (e.partition, e.offset) not in sent]
                    sent.update((e.partition, e.offset) for e in events)
                for position, reason in outcome.late:
                    event = events[position]
                    if (event.partition, event.offset) not in sent:
                        sent.add((event.partition, event.offset))
                        letters.append(_letter(event, [(LATE_FIELD, reason)], self.topic))
                if outcome.record is not None:
                    updates.append((driver_id, outcome.record, record))
            clock.tick("fold_ms")
            self.send(letters, f"{len(letters)} dead letters")
            letters = []
            clock.tick("dlq_ms")
            moved_on = self._retried(lambda batch=updates: self.store.compare_and_set(batch),
                                     f"write of {len(updates)} records")
            written_ms = now_ms()
            clock.tick("write_ms")
            lost = set(moved_on)
            for driver_id, _, _ in updates:
                if driver_id not in lost:
                    counts["written"] += 1
                    stats.lags_ms += [written_ms - t for t in outcomes[driver_id].applied_ms]
            counts["conflicts"] += len(moved_on)
            todo = moved_on
        for outcome in outcomes.values():
            counts["late"] += len(outcome.late)
            counts["duplicates"] += outcome.duplicates
            counts["replayed"] += outcome.replayed


def update_partitions(settings: Settings, topic: str, lateness_ms: int) -> ArrowFn:
    """The `mapInArrow` body of stage 2: Kafka rows (`RAW_COLUMNS`) of one partition in, its `STATS_SCHEMA` row out.

    The cyclic garbage collector is off while a partition is updated: the update makes several small objects per
    record and drops them all at the end, none in a cycle, and the collections it triggered took about a fifth of
    the update's time (streaming/README.md); it is back on before the row goes out."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        stats = PartitionStats()
        clock = Clock(stats)
        gc.disable()  # see below
        try:
            parsed = parse(batches)
            clock.tick("parse_ms")
            store = retry(lambda: open_store(settings), what="store connection",
                          give_up_s=settings.stream_store_giveup_s, retry_on=(StoreError,))
            update = PartitionUpdate(settings, topic, lateness_ms, store,
                                     lambda letters, what: send_dead_letters(settings, letters, what))
            update.run(parsed, stats, clock)
        finally:
            gc.enable()
        yield stats.batch()

    return run
