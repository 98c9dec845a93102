"""Stage 2 of the stream without Spark (`streaming.update`): one partition's records folded onto their drivers'
store records, against a real store and a real broker. A task run twice, two runs at once and a write that moves a
record on between its read and its write all leave the records a single fold of the events."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pytest
from topic_reader import read_topic

from batch.generate import generate_city
from features.fold import fold
from featurestore import open_store
from featurestore.base import OnlineStore, Update
from runtime.config import Settings, load_settings
from schemas.features import FOLD_BINS
from schemas.messages import encode
from streaming.dead_letters import send_dead_letters
from streaming.parse import RAW_COLUMNS, parse
from streaming.update import STATS_SCHEMA, Clock, PartitionStats, PartitionUpdate, update_partitions

pytestmark = pytest.mark.kafka
LATENESS_MS = 10_000


@pytest.fixture(params=["sqlite", pytest.param("aerospike", marks=pytest.mark.aerospike)])
def settings(request: pytest.FixtureRequest, kafka_bootstrap: str, new_topic, tmp_path) -> Iterator[Settings]:
    """A fresh store of each backend, a source topic name and its own DLQ topic."""
    base = load_settings(kafka_bootstrap=kafka_bootstrap, topic_trip_events=new_topic(partitions=1),
                         topic_trip_events_dlq=new_topic(partitions=1), sqlite_path=tmp_path / "features.db")
    if request.param == "sqlite":
        yield base
        return
    hosts = request.getfixturevalue("aerospike_hosts")
    settings = base.with_overrides(store="aerospike", aerospike_hosts=hosts, aerospike_timeout_ms=2_000,
                                   aerospike_set_prefix=f"test-update-{uuid.uuid4().hex[:6]}-")
    yield settings
    open_store(settings).truncate()


def kafka_rows(values: list[bytes], partition: int = 0, first_offset: int = 0) -> pa.RecordBatch:
    """Records as the Kafka source gives them (`RAW_COLUMNS`)."""
    return pa.RecordBatch.from_arrays(
        [pa.array([b"k"] * len(values), pa.binary()), pa.array(values, pa.binary()),
         pa.array([partition] * len(values), pa.int32()),
         pa.array(range(first_offset, first_offset + len(values)), pa.int64())], names=list(RAW_COLUMNS))


def city(drivers: int = 12) -> list[dict]:
    """A generated day of a small city's events, in time order."""
    return list(generate_city(seed=3, drivers=drivers, days=1).messages())


def expected(messages: list[dict]) -> dict[str, dict]:
    """Each driver's fold of `messages`."""
    by_driver: dict[str, list] = {}
    for m in messages:
        by_driver.setdefault(m["driver_id"], []).append((m["ts"], m["event_id"], m["event_type"], m.get("rating")))
    return {driver: fold(events).to_bins() for driver, events in by_driver.items()}


def stored(settings: Settings, drivers: list[str]) -> dict[str, dict | None]:
    """The whole records (with `_updated_ms`, without the stream state) of `drivers`."""
    return {row.entity_id: row.bins for row in open_store(settings).read(drivers, (*FOLD_BINS, "_updated_ms"))}


def run(settings: Settings, batches: list[pa.RecordBatch]) -> dict:
    """One partition's update, as a Spark task runs it; its stats row."""
    update = update_partitions(settings, settings.topic_trip_events, LATENESS_MS)
    (row,) = pa.Table.from_batches(list(update(iter(batches))), schema=STATS_SCHEMA).to_pylist()
    return row


def without_stamps(records: dict[str, dict | None]) -> dict[str, dict | None]:
    return {driver: {k: v for k, v in bins.items() if k != "_updated_ms"} for driver, bins in records.items()}


def test_a_partition_run_twice_changes_nothing_the_second_time(settings: Settings) -> None:
    messages = city()
    half = len(messages) // 2
    run(settings, [kafka_rows([encode(m) for m in messages[:half]])])  # an earlier micro-batch
    earlier = {m["driver_id"] for m in messages[:half]}
    driver = next(m["driver_id"] for m in messages[half:] if m["driver_id"] in earlier)
    late = {**messages[half], "driver_id": driver, "event_id": "late-1",
            "ts": min(m["ts"] for m in messages[:half] if m["driver_id"] == driver) - 1}  # before its final events
    values = [encode(m) for m in messages[half:]]
    values[10:10] = [b"{not json", encode(late)]
    batches = [kafka_rows(values[:200], first_offset=half), kafka_rows(values[200:], first_offset=half + 200)]
    first = run(settings, batches)
    want = expected(messages)
    records = stored(settings, sorted(want))
    assert without_stamps(records) == want
    assert (first["records"], first["invalid"], first["late"], first["duplicates"]) == (len(values), 1, 1, 0)
    assert first["written"] == first["drivers"] and len(first["lags_ms"]) == len(values) - 2

    again = run(settings, batches)  # a retried or replayed task: every valid event's offset is in its record
    assert (again["written"], again["replayed"], again["duplicates"], again["late"]) == (0, len(values) - 1, 0, 0)
    assert stored(settings, sorted(want)) == records  # `_updated_ms` included: nothing was written
    letters = read_topic(settings, settings.topic_trip_events_dlq, 3)  # the invalid record twice, the late one once
    assert sorted(letter["offset"] for _, letter in letters) == [half + 10, half + 10, half + 11]


def test_two_runs_of_a_partition_at_once_apply_it_once(settings: Settings) -> None:
    messages = city()
    batches = [kafka_rows([encode(m) for m in messages])]
    results: list[dict] = []
    errors: list[BaseException] = []

    def task() -> None:
        try:
            results.append(run(settings, batches))
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=task) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    want = expected(messages)
    assert without_stamps(stored(settings, sorted(want))) == want
    # each driver is written by one run; the other finds its events in the record (after a conflict, or not)
    assert sum(r["written"] for r in results) == len(want)
    assert sum(r["replayed"] for r in results) == len(messages)
    assert all(r["duplicates"] == r["late"] == 0 for r in results)


class MovedOnBeforeWrite:
    """A store whose first compare-and-set lets another partition's update of the same drivers write first."""

    def __init__(self, store: OnlineStore, other: Iterator[None]) -> None:
        self.store, self.other = store, other

    def read_current(self, ids: list[str]):
        return self.store.read_current(ids)

    def compare_and_set(self, updates: list[Update]) -> list[str]:
        next(self.other, None)
        return self.store.compare_and_set(updates)


def test_a_record_moved_on_between_read_and_write_is_read_and_folded_again(settings: Settings) -> None:
    """A producer that did not key by driver: each driver's morning in one partition, its evening in another, both
    updated at once; the morning's write lands between the evening's read and write."""
    messages = city(drivers=6)
    morning, evening = messages[: len(messages) // 2], messages[len(messages) // 2 :]
    store = open_store(settings)

    def other_partition() -> Iterator[None]:
        run(settings, [kafka_rows([encode(m) for m in morning], partition=1)])
        yield

    def send(letters, what):
        send_dead_letters(settings, letters, what)

    stats = PartitionStats()
    update = PartitionUpdate(settings, settings.topic_trip_events, LATENESS_MS,
                             MovedOnBeforeWrite(store, other_partition()), send)
    update.run(parse([kafka_rows([encode(m) for m in evening], partition=0)]), stats, Clock(stats))
    both = {m["driver_id"] for m in morning} & {m["driver_id"] for m in evening}
    assert stats.counts["conflicts"] == len(both) > 0
    assert stats.counts["written"] == len({m["driver_id"] for m in evening})
    want = expected(messages)
    assert without_stamps(stored(settings, sorted(want))) == want
