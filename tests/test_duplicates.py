"""docs/spec.md §3/§7: an exact duplicate is applied once by every path, and events that reuse an id are applied alike.

Properties (hypothesis) over the streaming state (`streaming.driver_state.advance`, random micro-batches and
allowed lateness) against the batch folds (backfill's `driver_record`, the point-in-time `driver_examples`); then one
log with repeated event ids through real Spark (backfill, materialize) and a real streaming query.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from driver_feed import fed
from hypothesis import given, settings
from hypothesis import strategies as st
from properties import examples

from batch.backfill import backfill
from batch.eventlog import EVENT_SCHEMA, to_messages, write_events
from batch.materialize import materialize
from batch.pointintime import RECORD_BINS, driver_examples, driver_record
from features.derive import model_features
from features.fold import DriverState, EventTuple, fold, fold_order
from featurestore import open_store
from runtime.config import load_settings
from schemas.features import MODEL_FEATURES
from schemas.messages import EVENT_TYPES
from streaming.driver_state import DUPLICATE_HORIZON_MS, DUPLICATE_MEMORY

MIN = 60_000
T0 = 1_717_401_600_000  # 2024-06-03T08:00Z
RATINGS = (None, 1.0, 3.5, 5.0)


@st.composite
def logs_with_repeated_ids(draw: st.DrawFn) -> list[EventTuple]:
    """Distinct events (ties of ts included) plus events that repeat an id: exact duplicates, or with another ts,
    type or rating; all within 50 min and fewer than the streaming state remembers."""
    times = st.integers(T0 + MIN, T0 + 50 * MIN).map(lambda ts: ts - ts % 30_000)  # coarse: same-ms ties happen
    kinds, ratings = st.sampled_from(EVENT_TYPES), st.sampled_from(RATINGS)
    n = draw(st.integers(1, 20))
    base = [(draw(times), f"e{i:02d}", draw(kinds), draw(ratings)) for i in range(n)]
    repeats = []
    for _ in range(draw(st.integers(0, 12))):
        ts, event_id, kind, rating = draw(st.sampled_from(base))
        change = draw(st.sampled_from(("none", "none", "ts", "type", "rating")))
        repeats.append((draw(times) if change == "ts" else ts, event_id, draw(kinds) if change == "type" else kind,
                        draw(ratings) if change == "rating" else rating))
    assert n + len(repeats) < DUPLICATE_MEMORY
    return base + repeats


def split(draw: st.DrawFn, events: list) -> list[list]:
    """`events` cut into micro-batches of random sizes."""
    batches, start = [], 0
    while start < len(events):
        size = draw(st.integers(1, 6))
        batches.append(events[start : start + size])
        start += size
    return batches


def stream(batches: list[list[EventTuple]], lateness_ms: int) -> tuple[dict | None, list, int]:
    """Feed batches as the stream does: (the visible record, the late events, the duplicates)."""
    driver = fed(batches, lateness_ms)
    return driver.visible, driver.late, driver.duplicates


def no_late_delay(batches: list[list[EventTuple]]) -> int:
    """The smallest allowed lateness under which no event arrives as far behind the driver's latest event."""
    delay, max_seen = 0, None
    for batch in batches:
        if max_seen is not None:
            delay = max(delay, max_seen - min(e[0] for e in batch) + 1)
        max_seen = max([max_seen or 0] + [e[0] for e in batch])
    return delay


def pit(events: list[EventTuple]) -> list[tuple]:
    """Point-in-time tuples of fold tuples: trip id and offer fields derived from the event id."""
    return [(*e, f"t-{e[1]}", 4.0, 1.2, 15.0, 4.8, None) for e in events]


@settings(max_examples=examples(300), deadline=None)
@given(data=st.data())
def test_repeated_ids_in_any_order_fold_like_the_batch_paths(data: st.DataObject) -> None:
    log = data.draw(logs_with_repeated_ids())
    arrival = data.draw(st.permutations(log))
    batches = split(data.draw, arrival)
    delay = no_late_delay(batches) + data.draw(st.sampled_from((0, 1, 5 * MIN)))
    visible, late, duplicates = stream(batches, delay)
    expected = fold(log).to_bins()
    assert visible == expected == driver_record("d", arrival)[1]
    assert (late, duplicates, expected["_n_events"]) == ([], len(log) - len(set(log)), len(set(log)))
    offers = [e for e in fold_order(log) if e[2] == "trip_offered"]
    assert [example[:2] for example in driver_examples(pit(arrival))] == [(f"t-{e[1]}", e[0]) for e in offers]


@settings(max_examples=examples(200), deadline=None)
@given(data=st.data())
def test_duplicates_of_final_events_are_duplicates_not_late(data: st.DataObject) -> None:
    log = fold_order(data.draw(logs_with_repeated_ids()))
    batches = split(data.draw, log)  # in order: nothing is late
    copies = data.draw(st.integers(1, 10))
    for _ in range(copies):  # deliver an event again in the same or a later batch
        at = data.draw(st.integers(0, len(batches) - 1))
        batches[at].append(data.draw(st.sampled_from([e for batch in batches[: at + 1] for e in batch])))
    visible, late, duplicates = stream(batches, data.draw(st.sampled_from((0, MIN, 10 * MIN))))
    assert visible == fold(log).to_bins()
    assert (late, duplicates) == ([], copies)


@given(log=logs_with_repeated_ids(), extra=st.lists(st.sampled_from((None, "a", "b")), min_size=32, max_size=32),
       data=st.data())
def test_the_fold_order_and_the_copy_kept_do_not_depend_on_input_order(log, extra, data) -> None:
    events = [(*e, extra[i % len(extra)]) for i, e in enumerate(log)]  # copies may differ beyond the fold fields
    assert fold_order(data.draw(st.permutations(events))) == fold_order(events)


def test_the_memory_of_final_events_is_bounded() -> None:
    events = [(T0 + i * 10_000, f"e{i:03d}", "trip_completed", None) for i in range(DUPLICATE_MEMORY + 2)]
    driver = fed([events], lateness_ms=0)  # all final: the count bound forgets two
    result = driver.feed([events[0], events[2]], lateness_ms=0)
    assert ([position for position, _ in result.late], result.duplicates, result.record) == ([0], 1, None)
    later = (events[-1][0] + DUPLICATE_HORIZON_MS + 1, "x", "shift_ended", None)
    driver.feed([later], lateness_ms=0)  # the horizon forgets all before `later`
    result = driver.feed([events[-1], later], lateness_ms=0)
    assert ([position for position, _ in result.late], result.duplicates, result.record) == ([0], 1, None)


# ---- one log with repeated event ids through real Spark and a real streaming query --------------------------------

DRIVER = "dup-1"
SCRIPT = [  # (minute, event id, type, trip, rating)
    (0, "s1", "shift_started", None, None),
    (1, "o1", "trip_offered", "t1", None),
    (2, "a1", "offer_accepted", "t1", None),
    (20, "c1", "trip_completed", "t1", None),
    (21, "r1", "trip_rated", "t1", 4.0),
    (25, "o2", "trip_offered", "t2", None),
    (26, "d2", "offer_declined", "t2", None),
    (30, "o3", "trip_offered", "t3", None),
    (31, "a3", "offer_accepted", "t3", None),
    (50, "c3", "trip_completed", "t3", None),
]
REPEATS = [  # streamed after the script
    (1, "o1", "trip_offered", "t1", None),  # exact duplicates: of final events (not late), of a pending one
    (2, "a1", "offer_accepted", "t1", None),
    (21, "r1", "trip_rated", "t1", 4.0),
    (50, "c3", "trip_completed", "t3", None),
    (35, "a1", "offer_accepted", "t1", None),  # ids reused by other events: applied by every path
    (40, "o2", "trip_offered", "t2", None),
    (50, "c3", "offer_accepted", "t3", None),  # sorts before the pending c3: folded in its place
]
EXACT = 4


def rows(script: list[tuple]) -> list[dict]:
    """Event-log rows of the script."""
    offer = {"pickup_eta_min": 4.0, "surge_multiplier": 1.2, "est_duration_min": 15.0, "rider_rating": 4.8}
    return [{"event_id": eid, "event_type": kind, "ts_ms": T0 + minute * MIN, "driver_id": DRIVER, "trip_id": trip,
             "rating": rating, "schema_version": 1, **(offer if kind == "trip_offered" else {})}
            for minute, eid, kind, trip, rating in script]


@pytest.mark.spark
@pytest.mark.kafka
def test_backfill_materialization_and_streaming_agree_on_a_log_with_repeated_ids(spark, kafka_bootstrap, new_topic,
                                                                                tmp_path: Path) -> None:
    from test_streaming_job import produce, records
    from test_streaming_job import stream as run_stream

    log = pa.Table.from_pylist(rows(SCRIPT) + rows(REPEATS), schema=EVENT_SCHEMA)
    write_events(log, tmp_path / "events")
    applied = fold_order([(r["ts_ms"], r["event_id"], r["event_type"], r["rating"]) for r in log.to_pylist()])
    expected = fold(applied).to_bins()
    assert (expected["_n_events"], expected["ds_total_trips"], expected["ds_n_accept"]) == (13, 2, 4)

    base = load_settings(home=tmp_path, datasets_dir=tmp_path / "datasets", kafka_bootstrap=kafka_bootstrap,
                         topic_trip_events=new_topic(partitions=1), topic_trip_events_dlq=new_topic(partitions=1))
    batch = base.with_overrides(sqlite_path=tmp_path / "batch.db")
    live = base.with_overrides(sqlite_path=tmp_path / "live.db")
    filled = backfill(spark, batch, tmp_path / "events", progress=False)
    assert (filled.events, filled.duplicates) == (log.num_rows, EXACT)
    backfilled = records(batch, [DRIVER])[DRIVER]
    assert backfilled == {k: v for k, v in expected.items() if k in RECORD_BINS}

    materialize(spark, open_store(batch), tmp_path / "events", batch.datasets_dir, name="dups", progress=False)
    examples = pq.read_table(batch.datasets_dir / "dups").sort_by("offer_ts_ms").to_pylist()
    assert [(e["trip_id"], e["label"]) for e in examples] == [("t1", 0), ("t2", 1), ("t3", 0), ("t2", 1)]
    state, offers = DriverState(), iter(examples)
    for event in applied:
        if event[2] == "trip_offered":
            example, wanted = next(offers), model_features(state.to_bins(), event[0], 4.0, 4.8, 1.2, 15.0)
            got = [math.nan if example[n] is None else example[n] for n in MODEL_FEATURES]  # null = missing
            assert got == pytest.approx(wanted, nan_ok=True)
        state.apply(*event)

    produce(live, list(to_messages(log)))  # the script in order, then the repeats, 3 per micro-batch
    metrics = run_stream(spark, live, tmp_path, max_offsets=3)
    assert records(live, [DRIVER])[DRIVER] == backfilled
    sample = metrics.registry.get_sample_value
    assert sample("tripscore_stream_events_total", {"outcome": "duplicate"}) == EXACT
    assert sample("tripscore_stream_events_total", {"outcome": "late"}) == 0
