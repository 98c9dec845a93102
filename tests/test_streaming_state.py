"""A driver's stream state in its record (no Spark, no store): final and pending events, out-of-order refold, late
events, duplicates, replays and a backfilled record (`streaming.driver_state`)."""

from __future__ import annotations

import random

import orjson
import pytest
from driver_feed import TOPIC, Fed, fed

from features.fold import fold
from schemas.features import STREAM_STATE_BIN
from streaming.driver_state import StreamState, advance, source_tag
from streaming.parse import KafkaEvent

MIN = 60_000
EVENTS = [
    (0, "e00", "shift_started", None),
    (1 * MIN, "e01", "trip_offered", None),
    (2 * MIN, "e02", "offer_accepted", None),
    (20 * MIN, "e03", "trip_completed", None),
    (21 * MIN, "e04", "trip_rated", 4.0),
    (25 * MIN, "e05", "trip_offered", None),
    (26 * MIN, "e06", "offer_declined", None),
    (70 * MIN, "e07", "trip_offered", None),
    (71 * MIN, "e08", "offer_accepted", None),
    (90 * MIN, "e09", "trip_completed", None),
    (91 * MIN, "e10", "shift_ended", None),
]


def test_in_order_batches_equal_the_fold():
    driver = fed([EVENTS[i : i + 3] for i in range(0, len(EVENTS), 3)], lateness_ms=10 * MIN)
    assert driver.visible == fold(EVENTS).to_bins()
    assert (driver.late, driver.duplicates, driver.writes) == ([], 0, 4)


def test_out_of_order_within_the_lateness_equals_in_order():
    rng = random.Random(3)
    shuffled = EVENTS[:]
    for start in range(0, len(shuffled), 4):  # reorder inside blocks of 4 (at most 44 min apart, lateness 60 min)
        block = shuffled[start : start + 4]
        rng.shuffle(block)
        shuffled[start : start + 4] = block
    driver = fed([shuffled[i : i + 2] for i in range(0, len(shuffled), 2)], lateness_ms=60 * MIN)
    assert driver.visible == fold(EVENTS).to_bins()
    assert (driver.late, driver.duplicates) == ([], 0)


def test_events_beyond_the_lateness_behind_the_latest_are_final():
    driver = fed([EVENTS], lateness_ms=65 * MIN)  # latest 91 min: final up to 26 min
    state = driver.state
    assert state.committed == fold(EVENTS[:7]).dump() and state.last == EVENTS[6]
    assert state.pending == EVENTS[7:] and state.offsets == {0: len(EVENTS) - 1} and state.source == TOPIC
    assert len(state.recent) == 2 * 7
    assert driver.visible == fold(EVENTS).to_bins()


def test_with_no_lateness_every_event_is_final_and_nothing_is_kept_twice():
    driver = fed([EVENTS[:4], EVENTS[4:]], lateness_ms=0)
    state = driver.state
    assert (state.pending, state.committed, state.last) == ([], None, EVENTS[-1])
    assert driver.visible == fold(EVENTS).to_bins()


def test_an_event_the_final_state_covers_is_late_and_changes_nothing():
    driver = fed([EVENTS[:8]], lateness_ms=40 * MIN)  # latest 70 min: final up to 26 min (e06)
    result = driver.feed([(10 * MIN, "x1", "offer_declined", None), EVENTS[8]], lateness_ms=40 * MIN)
    assert [position for position, _ in result.late] == [0]
    assert result.late[0][1] == ("late event, older than the driver's allowed lateness (event time "
                                 "1970-01-01T00:10:00.000Z; the driver's events are final up to "
                                 "1970-01-01T00:26:00.000Z, its latest is 1970-01-01T01:10:00.000Z, lateness 2400 s)")
    assert driver.visible == fold(EVENTS[:9]).to_bins()


def test_an_event_after_the_last_final_one_is_folded_however_late():
    driver = fed([EVENTS[:3]], lateness_ms=60 * MIN)  # all pending
    driver.feed([EVENTS[9]], lateness_ms=60 * MIN)  # latest 90 min: e00..e02 final
    result = driver.feed([(10 * MIN, "x1", "offer_declined", None)], lateness_ms=60 * MIN)  # 80 min behind
    assert result.late == []  # after e02, the last final event
    assert driver.visible == fold([*EVENTS[:3], EVENTS[9], (10 * MIN, "x1", "offer_declined", None)]).to_bins()


def test_lateness_is_judged_before_the_batch_moves_the_latest_event():
    driver = fed([EVENTS[:3]], lateness_ms=10 * MIN)  # latest 2 min: all pending
    result = driver.feed([EVENTS[9], (10 * MIN, "x1", "offer_declined", None)], lateness_ms=10 * MIN)
    assert result.late == []  # judged against the final events before this batch: none is after 2 min
    assert driver.visible == fold([*EVENTS[:3], EVENTS[9], (10 * MIN, "x1", "offer_declined", None)]).to_bins()


def test_redelivered_events_are_duplicates():
    driver = fed([EVENTS[:6]], lateness_ms=22 * MIN)  # latest 25 min: e00..e02 final, e03..e05 pending
    result = driver.feed([EVENTS[2], EVENTS[4], EVENTS[6], EVENTS[6]], lateness_ms=22 * MIN)
    assert result.duplicates == 3 and result.late == []
    assert driver.visible == fold(EVENTS[:7]).to_bins()


def test_a_replayed_batch_is_recognised_by_its_offsets_and_writes_nothing():
    driver = Fed()
    first = driver.sourced(EVENTS[:6])
    driver.apply(first, lateness_ms=0)
    before = driver.record
    result = driver.apply(first, lateness_ms=0)  # the same records again: a restart or a retried task
    assert (result.record, result.replayed, result.duplicates, result.late) == (None, 6, 0, [])
    later = driver.sourced(EVENTS[6:])
    result = driver.apply([*first[4:], *later], lateness_ms=0)  # a batch that overlaps the one applied
    assert (result.replayed, result.duplicates, result.late) == (2, 0, [])
    assert driver.visible == fold(EVENTS).to_bins() and driver.record is not before


def test_offsets_of_another_topic_are_not_this_ones():
    driver = fed([EVENTS[:3]], lateness_ms=0)
    events = [KafkaEvent(e, 0, i, None, b"") for i, e in enumerate(EVENTS[3:6])]  # offsets the record holds
    result = advance(driver.record, events, 0, source_tag("another-topic"))
    assert result.replayed == 0 and result.record is not None
    assert StreamState.decode(result.record[STREAM_STATE_BIN]).offsets == {0: 2}


def test_a_backfilled_record_is_continued_and_what_it_covers_is_a_duplicate():
    driver = fed([EVENTS[3:]], lateness_ms=0, record=fold(EVENTS[:5]).to_bins())  # no stream state
    assert driver.duplicates == 2 and driver.late == []
    assert driver.visible == fold(EVENTS).to_bins()


def test_once_continued_a_backfilled_records_covered_events_are_late():
    driver = fed([[(EVENTS[4][0], "zz", "trip_offered", None)]], lateness_ms=10 * MIN,
                 record=fold(EVENTS[:5]).to_bins())
    assert driver.duplicates == 1 and driver.writes == 0  # at the record's own time, any id: covered
    driver.feed([(EVENTS[4][0] + 1, "y", "trip_offered", None)], lateness_ms=10 * MIN)
    assert driver.state.last is None  # pending; final up to the record's own time
    result = driver.feed([(EVENTS[3][0], "w", "offer_declined", None)], lateness_ms=10 * MIN)
    assert [position for position, _ in result.late] == [0]


def test_a_batch_with_nothing_new_writes_nothing():
    driver = fed([EVENTS], lateness_ms=0)
    result = driver.feed(EVENTS[-2:], lateness_ms=0)
    assert result.record is None and result.duplicates == 2


def test_an_event_reusing_the_time_and_id_of_a_pending_one_is_folded_in_the_fold_order():
    completed, started = (5 * MIN, "r1", "trip_completed", None), (5 * MIN, "r1", "shift_started", None)
    driver = fed([[completed]], lateness_ms=MIN)
    result = driver.feed([started, completed], lateness_ms=MIN)  # started sorts first: refold
    assert (result.duplicates, result.late) == (1, [])
    assert driver.visible == fold([completed, started]).to_bins()
    assert (driver.visible["da_consec_trips"], driver.visible["_n_events"]) == (1, 2)


def test_exact_duplicates_of_final_events_are_duplicates_and_other_uses_of_their_id_are_events():
    driver = fed([EVENTS[:6]], lateness_ms=0)  # all final
    reused = (40 * MIN, "e03", "trip_completed", None)  # e03's id, a later time: another event
    result = driver.feed([EVENTS[0], EVENTS[3], reused, reused], lateness_ms=0)
    assert (result.duplicates, result.late) == (3, [])
    assert driver.visible == fold(EVENTS[:6] + [reused]).to_bins()


def test_stream_state_of_another_format_is_refused():
    driver = fed([EVENTS[:2]], lateness_ms=0)
    unknown = {**driver.record, STREAM_STATE_BIN: orjson.dumps([99, TOPIC, [], None, [], [], None])}
    with pytest.raises(ValueError, match="format 99"):
        advance(unknown, driver.sourced(EVENTS[2:3]), 0, TOPIC)
