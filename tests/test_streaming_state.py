"""The per-driver streaming state (no Spark): pending/committed split, out-of-order refold, late and duplicates."""

from __future__ import annotations

import random

from features.fold import fold
from streaming.driver_state import advance, load_state

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


def run_batches(batches, delay_ms=10 * MIN):
    """Feed batches like Spark does: the watermark of a batch is the max event time of earlier ones minus delay."""
    saved, visible, max_seen, late, dups = None, None, 0, [], 0
    for batch in batches:
        result = advance(saved, batch, max(0, max_seen - delay_ms))
        saved, late, dups = result.state, late + result.late, dups + result.duplicates
        visible = result.visible or visible
        max_seen = max([max_seen] + [e[0] for e in batch])
    return saved, visible, late, dups


def test_in_order_batches_equal_the_fold():
    _, visible, late, dups = run_batches([EVENTS[i : i + 3] for i in range(0, len(EVENTS), 3)])
    assert visible == fold(EVENTS).to_bins()
    assert (late, dups) == ([], 0)


def test_out_of_order_within_the_watermark_equals_in_order():
    rng = random.Random(3)
    shuffled = EVENTS[:]
    for start in range(0, len(shuffled), 4):  # reorder inside blocks of 4 (at most 44 min apart, delay 60 min)
        block = shuffled[start : start + 4]
        rng.shuffle(block)
        shuffled[start : start + 4] = block
    _, visible, late, dups = run_batches([shuffled[i : i + 2] for i in range(0, len(shuffled), 2)], 60 * MIN)
    assert visible == fold(EVENTS).to_bins()
    assert (late, dups) == ([], 0)


def test_committed_state_only_holds_events_up_to_the_watermark():
    result = advance(None, EVENTS, watermark_ms=25 * MIN)
    doc = load_state(result.state)
    assert doc["c"] == fold(EVENTS[:6]).to_bins() and doc["d"] == EVENTS[:6]
    assert [e[1] for e in doc["p"]] == ["e06", "e07", "e08", "e09", "e10"]
    assert doc["v"] == result.visible == fold(EVENTS).to_bins()


def test_an_event_the_committed_state_covers_is_late_and_changes_nothing():
    first = advance(None, EVENTS[:8], watermark_ms=30 * MIN)
    result = advance(first.state, [(10 * MIN, "x1", "offer_declined", None), EVENTS[8]], watermark_ms=30 * MIN)
    assert [position for position, _ in result.late] == [0]
    reason = result.late[0][1]
    assert reason.startswith("late event, older than the watermark (event time 1970-01-01T00:10:00.000Z")
    assert "committed up to 1970-01-01T00:26:00.000Z" in reason
    assert result.visible == fold(EVENTS[:9]).to_bins()


def test_an_event_after_the_committed_state_is_not_late_even_if_older_than_the_watermark():
    first = advance(None, EVENTS[:3], watermark_ms=0)  # all pending
    result = advance(first.state, [(10 * MIN, "x1", "offer_declined", None)], watermark_ms=60 * MIN)
    assert result.late == []  # the committed state ends at e02 (2 min)
    assert result.visible == fold(EVENTS[:3] + [(10 * MIN, "x1", "offer_declined", None)]).to_bins()


def test_lateness_is_judged_after_the_watermark_commits_pending_events():
    first = advance(None, EVENTS[:4], watermark_ms=0)  # all pending
    result = advance(first.state, [(10 * MIN, "x1", "offer_declined", None)], watermark_ms=60 * MIN)
    assert [position for position, _ in result.late] == [0]  # e03 (20 min) was committed first
    assert result.visible is None


def test_redelivered_events_are_duplicates():
    first = advance(None, EVENTS[:6], watermark_ms=2 * MIN)  # e00..e02 committed, e03..e05 pending
    result = advance(first.state, [EVENTS[2], EVENTS[4], EVENTS[6], EVENTS[6]], watermark_ms=2 * MIN)
    assert result.duplicates == 3 and result.late == []
    assert result.visible == fold(EVENTS[:7]).to_bins()


def test_first_sight_continues_the_store_record_and_drops_what_it_covers():
    seed = fold(EVENTS[:5]).to_bins()
    result = advance(None, EVENTS[3:], watermark_ms=0, seed=seed)
    assert result.duplicates == 2 and result.late == []
    assert result.visible == fold(EVENTS).to_bins()
    assert result.accepted_ms == [e[0] for e in EVENTS[5:]]


def test_a_batch_with_nothing_new_writes_nothing():
    first = advance(None, EVENTS, watermark_ms=0)
    result = advance(first.state, EVENTS[-2:], watermark_ms=0)
    assert result.visible is None and result.duplicates == 2


def test_an_event_reusing_the_time_and_id_of_a_pending_one_is_folded_in_the_fold_order():
    completed, started = (5 * MIN, "r1", "trip_completed", None), (5 * MIN, "r1", "shift_started", None)
    first = advance(None, [completed], watermark_ms=0)
    result = advance(first.state, [started, completed], watermark_ms=0)  # started sorts first: refold
    assert (result.duplicates, result.late) == (1, [])
    assert result.visible == fold([completed, started]).to_bins()
    assert (result.visible["da_consec_trips"], result.visible["_n_events"]) == (1, 2)


def test_exact_duplicates_of_committed_events_are_duplicates_and_other_uses_of_their_id_are_events():
    first = advance(None, EVENTS[:6], watermark_ms=30 * MIN)  # all committed
    reused = (40 * MIN, "e03", "trip_completed", None)  # e03's id, a later time: another event
    result = advance(first.state, [EVENTS[0], EVENTS[3], reused, reused], watermark_ms=30 * MIN)
    assert (result.duplicates, result.late) == (3, [])
    assert result.visible == fold(EVENTS[:6] + [reused]).to_bins()
