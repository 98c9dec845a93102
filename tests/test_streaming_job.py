"""The streaming job end to end: real broker, real Spark, SQLite store in a temp file."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis.errors import NonInteractiveExampleWarning
from kafka import KafkaProducer
from strategies import raw_messages, trip_event_values
from tcp_proxy import TcpProxy
from topic_reader import read_topic

from batch.generate import generate_city
from clients import TripEventProducer
from features.fold import fold
from featurestore import open_store
from featurestore.aerospike import parse_hosts
from runtime.config import Settings, load_settings
from runtime.kafka_clients import producer_options
from runtime.processes import ServiceProcess
from runtime.retry import GaveUp
from schemas.features import FOLD_BINS
from schemas.messages import decode_trip_event, encode
from streaming.job import StreamOptions, run

pytestmark = [pytest.mark.kafka, pytest.mark.spark]


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def event(event_id: str, event_type: str, ts: str | int, driver: str, trip: str | None = None, **extra) -> dict:
    message = {"event_id": event_id, "event_type": event_type, "ts": ts, "driver_id": driver, **extra}
    if trip is not None:
        message["trip_id"] = trip
    if event_type == "trip_offered":
        message.update(pickup_eta_min=4.0, surge_multiplier=1.2, est_duration_min=15.0, rider_rating=4.8)
    return message


@pytest.fixture
def settings(kafka_bootstrap: str, new_topic, tmp_path: Path) -> Settings:
    """A one-partition source topic, its own DLQ topic and a fresh SQLite store."""
    return load_settings(kafka_bootstrap=kafka_bootstrap, sqlite_path=tmp_path / "features.db",
                         topic_trip_events=new_topic(partitions=1), topic_trip_events_dlq=new_topic(partitions=1))


def produce(settings: Settings, messages: list[dict | tuple[bytes, bytes]]) -> None:
    """Send valid TripEvents through the clients' producer and raw (key, value) pairs as they are, in order."""
    with TripEventProducer(settings) as events:
        raw = KafkaProducer(**producer_options(settings), linger_ms=5)  # what no client of ours would send
        for is_raw, run in itertools.groupby(messages, key=lambda message: isinstance(message, tuple)):
            if is_raw:
                for key, value in run:
                    raw.send(settings.topic_trip_events, key=key, value=value)
                raw.flush()
            else:
                assert events.send_all(run) == []
                events.flush()
        raw.close()


def stream(spark, settings: Settings, tmp_path: Path, max_offsets: int, lateness_s: float | None = None):
    options = StreamOptions.from_settings(settings, checkpoint=tmp_path / "checkpoint", available_now=True,
                                          metrics_port=0, max_offsets_per_trigger=max_offsets, lateness_s=lateness_s)
    return run(spark, settings, options)


def records(settings: Settings, ids: list[str]) -> dict[str, dict | None]:
    """The fold bins of each driver's record (None: no record)."""
    return {row.entity_id: row.bins for row in open_store(settings).read(ids, FOLD_BINS)}


def dead_letters(settings: Settings, expected: int) -> list[tuple[bytes, dict]]:
    return read_topic(settings, settings.topic_trip_events_dlq, expected)


def test_scripted_sequence_yields_the_hand_computed_features(spark, settings, tmp_path):
    a, b = "drv-a", "drv-b"
    script = [
        event("a01", "shift_started", "2024-06-03T22:00:00Z", a),
        event("a02", "trip_offered", "2024-06-03T22:05:00Z", a, "t1"),
        event("a03", "offer_accepted", ms("2024-06-03T22:06:00+00:00"), a, "t1"),  # epoch-ms form
        event("a04", "trip_completed", "2024-06-03T22:30:00Z", a, "t1"),
        event("a05", "trip_rated", "2024-06-03T22:32:00Z", a, "t1", rating=5),
        event("a06", "trip_offered", "2024-06-03T22:40:00Z", a, "t2"),
        event("a07", "offer_declined", "2024-06-03T22:41:00Z", a, "t2"),
        event("a08", "trip_offered", "2024-06-03T22:50:00Z", a, "t3"),  # never answered
        event("a09", "trip_offered", "2024-06-03T23:30:00Z", a, "t4"),  # 40 min gap: streak resets
        event("a10", "offer_accepted", "2024-06-03T23:31:00Z", a, "t4"),
        event("a11", "trip_completed", "2024-06-03T23:58:00Z", a, "t4"),
        event("b01", "shift_started", "2024-06-04T10:00:00+02:00", b),  # 08:00 UTC, still open at the end
        event("a12", "trip_rated", "2024-06-04T02:10:00+02:00", a, "t4", rating=4),  # 00:10 UTC: new UTC day
        event("a13", "trip_offered", "2024-06-04T00:15:00Z", a, "t5"),
        event("a14", "offer_accepted", "2024-06-04T00:16:00Z", a, "t5"),
        event("a15", "trip_completed", "2024-06-04T00:40:00Z", a, "t5"),
        event("a16", "trip_offered", "2024-06-04T00:41:00Z", a, "t6"),
        event("a17", "offer_declined", "2024-06-04T00:42:00Z", a, "t6"),
        event("a18", "shift_ended", "2024-06-04T00:50:00Z", a),
        event("b02", "trip_offered", "2024-06-04T08:10:00Z", b, "u1"),  # no response, no rating
    ]
    produce(settings, script)
    stream(spark, settings, tmp_path, max_offsets=7)
    got = records(settings, [a, b])
    assert got[a] == {
        "ds_total_trips": 3,
        "ds_n_accept": 3,
        "ds_n_decline": 2,
        "ds_decl_rate": 2 / 5,
        "ds_n_rated": 2,
        "ds_rating_sum": 9.0,
        "ds_avg_rating": 4.5,
        "da_day": 19878,  # 2024-06-04; 23:58's trip counted on 06-03
        "da_trips_day": 1,
        "da_shift_start": 0,  # shift ended
        "da_consec_trips": 2,  # t5 plus t4 (23:30's gap reset the streak before t4)
        "da_resp_1h": [ms("2024-06-04T00:16:00Z"), 1, ms("2024-06-04T00:42:00Z"), 0],  # 23:31 fell out
        "da_accept_1h": 0.5,
        "_event_ms": ms("2024-06-04T00:50:00Z"),
        "_n_events": 18,
    }
    assert got[b] == {
        "ds_total_trips": 0,
        "ds_n_accept": 0,
        "ds_n_decline": 0,
        "ds_n_rated": 0,
        "ds_rating_sum": 0.0,
        "da_day": 19878,
        "da_trips_day": 0,
        "da_shift_start": ms("2024-06-04T08:00:00Z"),
        "da_consec_trips": 0,
        "da_resp_1h": [],
        "_event_ms": ms("2024-06-04T08:10:00Z"),
        "_n_events": 2,
    }


def test_malformed_and_late_events_go_to_the_dlq_and_valid_ones_land(spark, settings, tmp_path):
    c = "drv-c"
    missing_id = encode({"event_type": "shift_started", "ts": "2024-06-03T08:05:00Z", "driver_id": c})
    bad_type = encode(event("c-bad", "trip_offered", "2024-06-03T08:06:00Z", c, "t9") | {"surge_multiplier": "x"})
    late = event("c-late", "offer_declined", "2024-06-03T08:01:30Z", c, "t1")
    produce(settings, [
        # batch 0: the driver's latest event is 08:20, so with 10 s of lateness its events are final up to 08:02
        event("c1", "shift_started", "2024-06-03T08:00:00Z", c),
        event("c2", "trip_offered", "2024-06-03T08:01:00Z", c, "t1"),
        event("c3", "offer_accepted", "2024-06-03T08:02:00Z", c, "t1"),
        event("c4", "trip_completed", "2024-06-03T08:20:00Z", c, "t1"),
        # batch 1: three malformed records and one late event
        (c.encode(), b"{not json"),
        (c.encode(), missing_id),
        (b"k-bad", bad_type),
        late,
        # batch 2: valid events after them still land, one out of order but after the final ones
        event("c5", "trip_rated", "2024-06-03T08:22:00Z", c, "t1", rating=5),
        event("c6", "trip_offered", "2024-06-03T08:19:55Z", c, "t2"),
    ])
    metrics = stream(spark, settings, tmp_path, max_offsets=4)
    record = records(settings, [c])[c]
    assert (record["_n_events"], record["ds_total_trips"], record["ds_avg_rating"]) == (6, 1, 5.0)
    assert "ds_decl_rate" in record and record["ds_decl_rate"] == 0.0  # the late decline changed nothing
    letters = sorted(dead_letters(settings, 4), key=lambda kv: kv[1]["offset"])
    assert [letter["offset"] for _, letter in letters] == [4, 5, 6, 7]
    assert [key for key, _ in letters] == [c.encode(), c.encode(), b"k-bad", c.encode()]
    errors = [letter["error"] for _, letter in letters]
    assert errors[0].startswith("<message>: not valid JSON")
    assert errors[1] == "event_id: is required"
    assert errors[2].startswith("surge_multiplier: expected a number")
    assert errors[3] == ("ts: late event, older than the driver's allowed lateness (event time "
                         "2024-06-03T08:01:30.000Z; the driver's events are final up to 2024-06-03T08:02:00.000Z, "
                         "its latest is 2024-06-03T08:20:00.000Z, lateness 10 s)")
    for (_, letter), raw in zip(letters, [b"{not json", missing_id, bad_type, encode(late)], strict=True):
        assert base64.b64decode(letter["original_b64"]) == raw
        assert (letter["stage"], letter["topic"], letter["partition"]) == ("stream", settings.topic_trip_events, 0)
    sample = metrics.registry.get_sample_value
    assert sample("tripscore_stream_events_total", {"outcome": "invalid"}) == 3
    assert sample("tripscore_stream_events_total", {"outcome": "late"}) == 1
    assert sample("tripscore_stream_events_total", {"outcome": "in"}) == 10


def test_out_of_order_within_the_lateness_equals_in_order(spark, settings, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="streaming")
    kinds = ["trip_offered", "offer_accepted", "trip_completed", "trip_rated", "trip_offered", "offer_declined"]
    start = ms("2024-06-03T12:00:00Z")
    timeline = [(start + i * 500, f"e{i:03d}", kinds[i % len(kinds)]) for i in range(90)]  # 45 s, 0.5 s apart

    def events_for(driver: str, order: list) -> list[dict]:
        return [event(eid, kind, ts, driver, f"t{i // 6}", **({"rating": 4} if kind == "trip_rated" else {}))
                for i, (ts, eid, kind) in enumerate(order)]

    shuffled = [e for b in range(0, 90, 6) for e in reversed(timeline[b : b + 6])]  # up to 2.5 s behind
    ordered_msgs, shuffled_msgs = events_for("in-order", timeline), events_for("shuffled", shuffled)
    produce(settings, [m for b in range(0, 90, 6) for m in ordered_msgs[b : b + 6] + shuffled_msgs[b : b + 6]])
    metrics = stream(spark, settings, tmp_path, max_offsets=16)
    got = records(settings, ["in-order", "shuffled"])
    assert got["shuffled"] == got["in-order"]
    assert got["in-order"]["_n_events"] == 90
    assert metrics.registry.get_sample_value("tripscore_stream_events_total", {"outcome": "late"}) == 0
    breakdowns = [json.loads(r.getMessage().split(" (ms) ", 1)[1]) for r in caplog.records if " breakdown " in r.msg]
    assert breakdowns, "debug logging prints a breakdown per batch"
    assert all(phases["total"] >= phases["execute"] > 0 for phases in breakdowns)
    assert all({"parse", "read", "fold", "dlq", "write"} <= phases.keys() for phases in breakdowns)
    assert all(phases["python MapInArrow"] > 0 for phases in breakdowns)


def test_another_drivers_later_events_make_no_event_late(spark, settings, tmp_path):
    """Lateness is judged per driver: a driver an hour ahead in event time changes nothing for another."""
    produce(settings, [
        event("x1", "shift_started", "2024-06-03T08:00:00Z", "drv-x"),
        event("y1", "shift_started", "2024-06-03T09:00:00Z", "drv-y"),
        event("y2", "shift_ended", "2024-06-03T09:00:01Z", "drv-y"),
        event("x2", "trip_offered", "2024-06-03T08:30:00Z", "drv-x", "t1"),  # after x1: folded
    ])
    metrics = stream(spark, settings, tmp_path, max_offsets=1)
    assert records(settings, ["drv-x"])["drv-x"]["_n_events"] == 2
    assert metrics.registry.get_sample_value("tripscore_stream_events_total", {"outcome": "late"}) == 0


def test_an_event_time_far_in_the_future_makes_no_other_event_late(spark, settings, tmp_path):
    """A device whose clock is 10 years ahead: its event is folded for its driver; another driver's event 2 s out of
    order is still folded in its place."""
    soon = int(time.time() * 1000) + 120_000
    produce(settings, [
        event("f1", "shift_started", soon + 10 * 365 * 86_400_000, "drv-ahead"),
        event("z1", "shift_started", soon, "drv-z"),
        event("z3", "trip_offered", soon + 3_000, "drv-z", "t1"),
        event("z2", "trip_offered", soon + 1_000, "drv-z", "t0"),  # 2 s out of order, in a later batch
    ])
    metrics = stream(spark, settings, tmp_path, max_offsets=1)
    got = records(settings, ["drv-ahead", "drv-z"])
    assert got["drv-z"]["_n_events"] == 3 and got["drv-ahead"]["_n_events"] == 1
    assert metrics.registry.get_sample_value("tripscore_stream_events_total", {"outcome": "late"}) == 0


def test_a_backfilled_record_is_continued_and_what_it_covers_is_a_duplicate(spark, settings, tmp_path):
    """A record without stream state (the backfill's) is final up to its `_event_ms`: an older event is a duplicate,
    not late, and newer ones continue its fold."""
    driver = "drv-backfilled"
    script = [
        event("i1", "shift_started", "2024-06-03T08:00:00Z", driver),
        event("i2", "trip_offered", "2024-06-03T08:01:00Z", driver, "t1"),
        event("i0", "trip_offered", "2024-06-03T08:00:30Z", driver, "t0"),  # covered by the record
        event("i3", "offer_accepted", "2024-06-03T08:02:00Z", driver, "t1"),
    ]
    tuples = [decode_trip_event(encode(m))[0] for m in script]
    folds = {e["event_id"]: (e["ts_ms"], e["event_id"], e["event_type"], e["rating"]) for e in tuples}
    open_store(settings).write([(driver, fold([folds["i1"], folds["i2"]]).to_bins())])
    produce(settings, script[2:])
    metrics = stream(spark, settings, tmp_path, max_offsets=1)
    assert records(settings, [driver])[driver] == fold([folds["i1"], folds["i2"], folds["i3"]]).to_bins()
    assert metrics.registry.get_sample_value("tripscore_stream_events_total", {"outcome": "duplicate"}) == 1
    assert metrics.registry.get_sample_value("tripscore_stream_events_total", {"outcome": "late"}) == 0


def _batch_ids(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.glob("[0-9]*")) if folder.is_dir() else []


def test_kill_9_and_restart_equals_a_batch_recomputation(kafka_bootstrap, new_topic, tmp_path):
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, sqlite_path=tmp_path / "features.db",
                             topic_trip_events=new_topic(partitions=2), topic_trip_events_dlq=new_topic(partitions=1))
    messages = list(generate_city(seed=5, drivers=40, days=2).messages())
    produce(settings, messages)
    env = {**os.environ, "TRIPSCORE_KAFKA_BOOTSTRAP": kafka_bootstrap, "TRIPSCORE_HOME": str(tmp_path / "home"),
           "TRIPSCORE_SQLITE_PATH": str(settings.sqlite_file),
           "TRIPSCORE_TOPIC_TRIP_EVENTS": settings.topic_trip_events,
           "TRIPSCORE_TOPIC_TRIP_EVENTS_DLQ": settings.topic_trip_events_dlq}
    checkpoint = tmp_path / "checkpoint"
    command = [sys.executable, "-m", "tripscore.cli", "stream", "--checkpoint", str(checkpoint), "--metrics-port", "0",
               "--max-offsets-per-trigger", "400", "--trigger-ms", "100"]
    with (tmp_path / "first.log").open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while True:  # kill while a batch is in flight (planned, not committed) after two committed ones
            commits, offsets = _batch_ids(checkpoint / "commits"), _batch_ids(checkpoint / "offsets")
            if len(commits) >= 2 and offsets[-1] > commits[-1]:
                break
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the stream committed no batch in time"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = len(_batch_ids(checkpoint / "commits"))
    assert killed_at * 400 < len(messages)
    finish = subprocess.run([*command, "--available-now"], env=env, capture_output=True, text=True, timeout=900)
    assert finish.returncode == 0, finish.stdout[-3000:] + finish.stderr[-3000:]
    by_driver: dict[str, list] = {}
    for m in messages:
        by_driver.setdefault(m["driver_id"], []).append((m["ts"], m["event_id"], m["event_type"], m.get("rating")))
    got = records(settings, sorted(by_driver))
    assert got == {driver: fold(events).to_bins() for driver, events in by_driver.items()}


def _invalid_trip_events(count: int) -> list[bytes]:
    """Generated trip-events values that fail validation, plus extremes: deep nesting, a nearly 1 MB original."""
    strategy = raw_messages(trip_event_values())
    found: list[bytes] = [b"[" * 100_000 + b"]" * 100_000, b'{"event_id": "' + b"x" * 1_000_000 + b'"}',
                          b'{"event_id": "\\ud800", "event_type": "shift_started", "ts": 0, "driver_id": "d"}']
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        while len(found) < count:
            raw = strategy.example()
            if raw and decode_trip_event(raw)[0] is None and len(raw) < 1_000_000:
                found.append(raw)
    return found


class LockedSQLite:
    """A SQLite outage: another connection holds the write lock past the store's busy timeout (5 s)."""

    def __init__(self, settings: Settings) -> None:
        self.path, self.lock = settings.sqlite_file, None

    def begin(self) -> None:
        self.lock = sqlite3.connect(self.path, isolation_level=None)
        self.lock.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        if self.lock is not None:
            self.lock.execute("ROLLBACK")
            self.lock.close()
            self.lock = None


class CutAerospike:
    """An Aerospike outage: the job reaches the server through a proxy that drops every connection."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy

    def begin(self) -> None:
        self.proxy.cut()

    def end(self) -> None:
        self.proxy.restore()


@pytest.fixture(params=["sqlite", "aerospike"])
def store_outage(request: pytest.FixtureRequest, settings: Settings) -> Iterator[tuple[Settings, dict, object]]:
    """(settings to read the store with, the job's store settings, an outage with `begin()` and `end()`)."""
    if request.param == "sqlite":
        yield settings, {"sqlite_path": settings.sqlite_file}, LockedSQLite(settings)
        return
    hosts = request.getfixturevalue("aerospike_node")
    prefix = f"test-stream-{uuid.uuid4().hex[:6]}-"
    direct = settings.with_overrides(store="aerospike", aerospike_hosts=hosts, aerospike_set_prefix=prefix)
    with TcpProxy(parse_hosts(hosts)[0][:2]) as proxy:
        job = {"store": "aerospike", "aerospike_hosts": proxy.address, "aerospike_set_prefix": prefix}
        try:
            yield direct, job, CutAerospike(proxy)
        finally:
            open_store(direct).truncate()


def test_hostile_input_and_a_store_outage_stop_nothing(store_outage, settings, tmp_path):
    """A live query takes generated invalid events and a store outage in its stride, then stops on SIGTERM."""
    store_settings, job_store, outage = store_outage
    valid = list(generate_city(seed=7, drivers=20, days=1).messages())
    invalid = _invalid_trip_events(60)
    mixed: list[dict | tuple[bytes, bytes]] = list(valid)
    for i, raw in enumerate(invalid):
        mixed.insert(i * len(valid) // len(invalid), (f"bad-{i}".encode(), raw))
    half = len(mixed) // 2
    job = ServiceProcess(
        ["stream", "--checkpoint", str(tmp_path / "checkpoint"), "--metrics-port", "0", "--trigger-ms", "200"],
        {"kafka_bootstrap": settings.kafka_bootstrap, "home": tmp_path / "home", **job_store,
         "topic_trip_events": settings.topic_trip_events, "topic_trip_events_dlq": settings.topic_trip_events_dlq,
         "stream_store_giveup_s": 120},
        tmp_path / "stream.log").start()

    def job_logs() -> str:  # the driver's log, and Spark's (where the executors' retries of seed reads go)
        return "".join(path.read_text(errors="replace") for path in (tmp_path / "stream.log",
                                                                     *(tmp_path / "home" / "logs").glob("*.log")))

    try:
        produce(settings, mixed[:half])
        first_drivers = [m["driver_id"] for m in valid[:50]]
        job.wait_until(lambda: any(records(store_settings, first_drivers).values()), "the first records", 180)
        outage.begin()
        produce(settings, mixed[half:])
        time.sleep(12)
        outage.end()
        by_driver: dict[str, list] = {}
        for m in valid:
            by_driver.setdefault(m["driver_id"], []).append((m["ts"], m["event_id"], m["event_type"], m.get("rating")))
        expected = {driver: fold(events).to_bins() for driver, events in by_driver.items()}
        job.wait_until(lambda: records(store_settings, sorted(expected)) == expected, "every valid event", 180)
        letters = dead_letters(settings, len(invalid))
        assert len(letters) == len(invalid)
        assert sorted(letter["original_sha256"] for _, letter in letters) == sorted(
            hashlib.sha256(raw).hexdigest() for raw in invalid)
        assert "retrying in" in job_logs(), "the outage never made a store call fail"

        outage.begin()  # SIGTERM while a batch waits for the store: it stops, unwritten, at once
        failures = job_logs().count("retrying in")
        produce(settings, [{**valid[-1], "event_id": "after-the-outage", "ts": valid[-1]["ts"] + 1}])
        job.wait_until(lambda: job_logs().count("retrying in") > failures, "a failed store call", timeout=120)
        started = time.monotonic()
        assert job.stop(timeout=10) == 0, job.log_tail()
        assert time.monotonic() - started < 10
    finally:
        outage.end()
        job.stop(timeout=10)


def test_a_store_down_past_the_give_up_time_ends_the_run_with_one_clear_error(spark, settings, tmp_path):
    produce(settings, [event("g1", "shift_started", "2024-06-03T08:00:00Z", "drv-g")])
    open_store(settings)  # the store file exists; now nothing can write to it
    lock = sqlite3.connect(settings.sqlite_file, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        options = StreamOptions.from_settings(settings, checkpoint=tmp_path / "checkpoint", available_now=True,
                                              metrics_port=0)
        with pytest.raises(GaveUp, match=r"still failing after \d+ s and \d+ attempts .*database is locked"):
            run(spark, settings.with_overrides(stream_store_giveup_s=6), options)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert records(settings, ["drv-g"])["drv-g"] is None  # nothing written, and the offsets were not committed
    stream(spark, settings, tmp_path, max_offsets=10)
    assert records(settings, ["drv-g"])["drv-g"]["_n_events"] == 1
