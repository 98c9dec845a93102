"""Property-based fuzzing of every decoder and per-message path: never raises, exactly one outcome per input.

Failures found by fuzzing are kept as explicit `@example`s.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from properties import examples
from scorer_helpers import driver_record, make_model, save_model
from strategies import (
    json_values,
    raw_messages,
    score_request_values,
    trip_event_values,
    valid_score_requests,
    valid_trip_events,
)

from featurestore.sqlite import SQLiteStore
from runtime.config import Settings
from schemas.fast_check import column_checker, fast_checker
from schemas.messages import (
    CANDIDATE,
    DEAD_LETTER_MAX_BYTES,
    SCORE_REQUEST,
    TRIP_EVENT,
    Decoded,
    dead_letter,
    decode_json,
    decode_score_request,
    decode_trip_event,
    encode,
    explain_score_request,
    explain_trip_event,
    guarded,
)
from schemas.timestamps import TS_MAX_MS
from scorer.service import Incoming, Origin, Scorer
from streaming.driver_state import advance, source_tag
from streaming.parse import RAW_COLUMNS, KafkaEvent, event_times, parse

FUZZ = settings(max_examples=examples(300), deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
NESTED = b"[" * 100_000 + b"]" * 100_000  # RecursionError inside the JSON decoder
LONE_SURROGATE_ID = b'{"event_id": "\\ud800", "event_type": "shift_started", "ts": 0, "driver_id": "d"}'
OFFSET_OUT_OF_RANGE = b'{"event_id": "e", "event_type": "shift_started", "ts": "0001-01-01T00:00:00+14:00", ' \
                      b'"driver_id": "d"}'
BEFORE_1970 = b'{"event_id": "e", "event_type": "shift_started", "ts": "1969-12-31T23:59:59Z", "driver_id": "d"}'
KNOWN_DRIVERS = 5
FRESH_MS = int(time.time() * 1000)
HUGE_ORIGINAL = b'{"event_id": "' + b"x" * 2_000_000 + b'"}'


def _fold_tuple(event: dict) -> tuple:
    return event["ts_ms"], event["event_id"], event["event_type"], event["rating"]


def _assert_fits(raw: bytes | None, problems: list) -> None:
    letter = dead_letter(raw, problems, stage="test", topic="t", partition=0, offset=1)
    encoded = encode(letter)
    assert len(encoded) <= DEAD_LETTER_MAX_BYTES
    decoded = json.loads(encoded)
    original = base64.b64decode(decoded["original_b64"])
    assert (raw or b"").startswith(original)
    assert decoded["original_bytes"] == len(raw or b"")
    assert decoded["original_sha256"] == hashlib.sha256(raw or b"").hexdigest()
    assert decoded["original_truncated"] == (len(original) < len(raw or b""))
    assert decoded["error"] and decoded["errors"]


@FUZZ
@given(raw_messages(trip_event_values()))
@example(NESTED)
@example(LONE_SURROGATE_ID)
@example(OFFSET_OUT_OF_RANGE)
@example(BEFORE_1970)
@example(HUGE_ORIGINAL)
def test_trip_event_decoding_is_total_and_every_rejection_fits_the_dlq(raw: bytes | None) -> None:
    event, problems = decode_trip_event(raw)
    assert (event is None) == bool(problems)  # exactly one outcome
    if event is None:
        _assert_fits(raw, problems)
    else:
        assert 0 <= event["ts_ms"] < TS_MAX_MS
        encode(event)  # every string of a valid event is encodable


def _integral_as_int(value: Any) -> Any:
    """`value` with every integral float up to 2^53 written as a JSON integer, as many producers write them."""
    if isinstance(value, dict):
        return {key: _integral_as_int(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_as_int(item) for item in value]
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53 else value


def _decided_fully(explain: Callable[[Any], Decoded]) -> Callable[[Any], Decoded]:
    """The decoder without its fast path: the standard JSON decoder, then the complete check."""
    def decode(raw: Any) -> Decoded:
        message, problems = decode_json(raw)
        return (None, problems) if problems else explain(message)

    return guarded(decode)


FAST_PATH_EDGES = [  # numbers and texts where orjson, the fast check and the complete check could part ways
    b'{"event_id": "e", "event_type": "shift_started", "ts": 9007199254740993, "driver_id": "d"}',
    b'{"event_id": "e", "event_type": "shift_started", "ts": 1e3, "driver_id": "d-1", "schema_version": 1.0}',
    b'{"event_id": "e", "event_type": "trip_rated", "ts": 0, "driver_id": "d", "trip_id": "t", "rating": 5}',
    b'{"event_id": "\\u00e9", "event_type": "shift_started", "ts": "1970-01-01T00:00:00Z", "driver_id": "d"}',
    b'{"event_id": "e", "event_type": "shift_started", "ts": 0, "driver_id": "d\\n"}',
    b'{"request_id": "r", "ts": 0, "surge_multiplier": 123456789012345678901234567890, "est_duration_min": 1, '
    b'"rider_rating": 5, "candidates": [{"driver_id": "d", "pickup_eta_min": 9007199254740993}]}',
    b'{"request_id": "r", "ts": 0, "surge_multiplier": 1, "est_duration_min": 1e400, "rider_rating": 5, '
    b'"candidates": [{"driver_id": "d", "pickup_eta_min": -0.0}, {"driver_id": "d", "pickup_eta_min": 0}]}',
    # strict JSON in unknown fields: orjson reads 2^63 as an int and 2^64 as a float; 1e19 is a float as written
    b'{"event_id": "e", "event_type": "shift_started", "ts": 0, "driver_id": "d", "x": 9223372036854775808}',
    b'{"event_id": "e", "event_type": "shift_started", "ts": 0, "driver_id": "d", "x": [18446744073709551616]}',
    b'{"event_id": "e", "event_type": "shift_started", "ts": 0, "driver_id": "d", "x": {"y": 1e19}}',
    b'{"event_id": "e", "event_type": "trip_rated", "ts": 0, "driver_id": "d", "trip_id": "t", "rating": 5, '
    b'"pickup_eta_min": 100000000000000000000}',
    b'{"event_id": "e", "event_type": "shift_started", "ts": 0, "driver_id": "d", "x": ' + b"[" * 63 + b"]" * 63 + b"}",
    b'{"event_id": "e", "event_type": "shift_started", "ts": 0, "driver_id": "d", "x": ' + b"[" * 64 + b"]" * 64 + b"}",
    b'{"event_id": "e", "event_type": "shift_started", "ts": 0, "driver_id": "d", "\u00e9": null, "trip_id": null}',
    b'{"request_id": "r", "ts": 0, "surge_multiplier": 1, "est_duration_min": 1, "rider_rating": 5, "candidates": '
    b'[{"driver_id": "d", "pickup_eta_min": 1e19}, {"driver_id": "e", "pickup_eta_min": 1, "x": [' + b"[" * 60
    + b"]" * 60 + b"]}]}",  # 64 levels: the request, the list, the candidate, x and 60 more
]



def with_examples(values: list[Any]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """`@example(value)` for each of `values`."""
    def apply(test: Callable[..., None]) -> Callable[..., None]:
        for value in values:
            test = example(value)(test)
        return test
    return apply

@FUZZ
@given(raw_messages(trip_event_values()) | valid_trip_events().map(lambda event: encode(_integral_as_int(event))))
@with_examples(FAST_PATH_EDGES[:5] + FAST_PATH_EDGES[7:14])  # the trip events among them
@example(encode({"event_id": "0", "event_type": "shift_started", "ts": 0, "driver_id": "0",  # found: `encode`
                 "extra": [10**400, float("inf")]}))  # raised on an integer beyond 64 bits next to an infinity
def test_the_fast_path_decides_trip_events_as_the_complete_check(raw: bytes | None) -> None:
    assert decode_trip_event(raw) == _decided_fully(explain_trip_event)(raw)


def _as_encoded(value: Any) -> Any:
    """`value` as `encode` writes it: NaN and the infinities as null, tuples as lists."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {key: _as_encoded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_encoded(item) for item in value]
    return value


@FUZZ
@given(json_values)
@example([10**400, float("nan"), "\ud800"])
def test_encode_writes_any_json_value_and_it_reads_back(value: Any) -> None:
    assert json.loads(encode({"v": value})) == {"v": _as_encoded(value)}


@FUZZ
@given(raw_messages(score_request_values())
       | valid_score_requests().map(lambda request: encode(_integral_as_int(request))))
@with_examples([*FAST_PATH_EDGES[5:7], FAST_PATH_EDGES[14]])  # the score requests among them
def test_the_fast_path_decides_score_requests_as_the_complete_check(raw: bytes | None) -> None:
    assert decode_score_request(raw) == _decided_fully(explain_score_request)(raw)


candidate_ids = st.one_of(st.text("abcXYZ019_.:-", min_size=1, max_size=66), st.sampled_from(
    ["", "a\nb", "a\n", "\u00e9", "a b", "x" * 64, "x" * 65]), st.integers(), st.none())
candidate_etas = st.one_of(st.floats(-1, 1e6), st.sampled_from([-0.0, 0.0, 1e308, float("nan"), float("inf")]),
                           st.integers(-5, 2**60), st.booleans(), st.none(), st.text(max_size=2))
candidate_items = st.one_of(
    st.fixed_dictionaries({"driver_id": candidate_ids, "pickup_eta_min": candidate_etas}),
    st.fixed_dictionaries({"driver_id": candidate_ids}, optional={"pickup_eta_min": candidate_etas, "x": st.none()}),
    st.lists(st.text(max_size=9), max_size=2), st.text(max_size=9), st.integers())


@FUZZ
@given(st.lists(candidate_items, max_size=8) | st.lists(st.fixed_dictionaries(
    {"driver_id": st.text("abc019", min_size=1, max_size=9), "pickup_eta_min": st.floats(0, 1e6)}), max_size=8))
@example([{"driver_id": "a", "pickup_eta_min": 1e308}, {"driver_id": "b", "pickup_eta_min": 1e308}])
@example([{"driver_id": "a\nb", "pickup_eta_min": 1.0}])
def test_a_candidate_list_taken_whole_is_what_the_item_wise_check_makes_of_it(items: list[Any]) -> None:
    """The whole-list check of plain candidates never raises, and takes a list only when the item-wise check would
    leave every item as it is; it takes the usual valid list."""
    item_wise = fast_checker("candidate", CANDIDATE)
    taken = column_checker(CANDIDATE)(items)
    if taken:
        assert all(item_wise(item) == item for item in items)
    plain = all(type(item) is dict and set(item) == {"driver_id", "pickup_eta_min"}
                and type(item["pickup_eta_min"]) is float and item_wise(item) == item for item in items)
    if plain and sum(item["pickup_eta_min"] for item in items) < 1e307:
        assert taken


def _ordinary(value: Any) -> bool:
    """Whether `value` holds only ASCII text and floats under 2^63 (orjson reads an integer beyond 64 bits as a
    float: the fast path leaves a float that large to the complete check, which can tell them apart)."""
    if isinstance(value, dict):
        return all(_ordinary(key) and _ordinary(item) for key, item in value.items())
    if isinstance(value, list):
        return all(map(_ordinary, value))
    return value.isascii() if isinstance(value, str) else not isinstance(value, float) or abs(value) < 2.0**63


@FUZZ
@given(valid_trip_events(), valid_score_requests())
def test_the_fast_path_takes_valid_ascii_messages(event: dict, request: dict) -> None:
    """The equality tests above would pass with a fast path that never accepts: it must take the usual case."""
    assume(_ordinary(event) and _ordinary(request))
    event, request = orjson.loads(encode(_integral_as_int(event))), orjson.loads(encode(request))
    assert fast_checker("event", TRIP_EVENT)(event) is not None
    assert fast_checker("request", SCORE_REQUEST)(request) is not None


@FUZZ
@given(valid_trip_events())
def test_a_valid_trip_event_is_applied_to_a_new_driver(message: dict) -> None:
    event, problems = decode_trip_event(json.dumps(message).encode())
    assert problems == []
    result = advance(None, [KafkaEvent(_fold_tuple(event), 0, 0, None, b"")], 10_000, source_tag("trip-events"))
    assert result.record is not None and result.record["_n_events"] == 1 and not result.late


@FUZZ
@given(st.lists(raw_messages(trip_event_values()), min_size=1, max_size=8))
@example([NESTED, LONE_SURROGATE_ID, None])
def test_parse_stage_sorts_every_record_under_its_driver_or_as_invalid(raws: list[bytes | None]) -> None:
    batch = pa.RecordBatch.from_arrays(
        [pa.array([b"k"] * len(raws), pa.binary()), pa.array(raws, pa.binary()),
         pa.array([0] * len(raws), pa.int32()), pa.array(range(len(raws)), pa.int64())],
        names=list(RAW_COLUMNS))
    parsed = parse(iter([batch]))
    times = pa.Table.from_batches(list(event_times(iter([batch])))).column("event_ms").to_pylist()
    assert parsed.records == len(raws)
    by_offset = {e.offset: (driver_id, e) for driver_id, events in parsed.by_driver.items() for e in events}
    invalid = {e.offset: problems for e, problems in parsed.invalid}
    assert sorted([*by_offset, *invalid]) == list(range(len(raws)))
    for events in parsed.by_driver.values():
        assert [e.offset for e in events] == sorted(e.offset for e in events)  # Kafka order within a driver
    for offset, raw in enumerate(raws):
        event, problems = decode_trip_event(raw)
        if event is None:
            assert invalid[offset] == problems and problems and times[offset] is None
            continue
        driver_id, parsed_event = by_offset[offset]
        assert (driver_id, parsed_event.fold, parsed_event.value) == (event["driver_id"], _fold_tuple(event), raw)
        assert times[offset] == event["ts_ms"]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scorer]:
    home = tmp_path_factory.mktemp("fuzz-scorer")
    save_model(home / "models", make_model("trip_decline_risk_lr_v1"))
    store = SQLiteStore(Path(home / "features.db"))
    store.write([driver_record(f"d{i}", 0.1 * i, event_ms=FRESH_MS) for i in range(KNOWN_DRIVERS)])
    # a generous deadline: a loaded machine must not turn a model answer into a store_timeout fallback here
    service = Scorer(Settings(home=home, models_dir=home / "models", store_deadline_ms=60_000), store)
    yield service
    service.close()
    store.close()


@FUZZ
@given(raw_messages(score_request_values()))
@example(NESTED)
@example(b'{"request_id": "\\ud800", "ts": 0, "surge_multiplier": 1, "est_duration_min": 1, "rider_rating": 1, '
         b'"candidates": [{"driver_id": "d1", "pickup_eta_min": 1}]}')
@example(b'{"request_id": "r", "ts": 0, "surge_multiplier": 1e308, "est_duration_min": 1e308, "rider_rating": 5, '
         b'"candidates": [{"driver_id": "d1", "pickup_eta_min": 1.7976931348623157e308}]}')
def test_scorer_answers_every_input_exactly_once(scorer: Scorer, raw: bytes | None) -> None:
    outgoing = asyncio.run(scorer.handle(raw, b"key", Origin("score-requests", 0, 7)))
    responses = [out for out in outgoing if out.topic == scorer.settings.topic_risk_scores]
    letters = [out for out in outgoing if out.topic == scorer.settings.topic_score_dlq]
    assert len(responses) == 1
    response = json.loads(responses[0].value)
    request, _ = decode_score_request(raw)
    if request is None:
        assert response["strategy"] == "error" and len(letters) == 1
        assert len(letters[0].value) <= DEAD_LETTER_MAX_BYTES
    else:
        assert response["request_id"] == request["request_id"] and not letters
        assert responses[0].key == request["request_id"].encode()
        assert response["strategy"] in ("model", "distance_only")
        assert sorted(r["driver_id"] for r in response["ranked"]) == sorted(c["driver_id"]
                                                                            for c in request["candidates"])


@FUZZ
@given(valid_score_requests(st.sampled_from([f"d{i}" for i in range(8)])))
def test_valid_requests_are_ranked_by_the_model_when_a_candidate_has_features(scorer: Scorer, message: dict) -> None:
    message = {**message, "ts": FRESH_MS + 1000}  # the records are fresh at the request's time
    outgoing = asyncio.run(scorer.handle(json.dumps(message).encode(), None, Origin("score-requests", 0, 0)))
    response = json.loads(outgoing[0].value)
    known = any(int(c["driver_id"][1:]) < KNOWN_DRIVERS for c in message["candidates"])
    assert len(outgoing) == 1 and response["strategy"] == ("model" if known else "distance_only")
    assert [r["rank"] for r in response["ranked"]] == list(range(1, len(message["candidates"]) + 1))


def _comparable(out) -> tuple:
    """An outgoing message without the fields that name when it was made."""
    message = json.loads(out.value)
    for stamp in ("scored_at", "timings_ms", "failed_at"):
        message.pop(stamp, None)
    return out.topic, out.key, message


@FUZZ
@given(st.lists(raw_messages(score_request_values())
                | valid_score_requests(st.sampled_from([f"d{i}" for i in range(8)])).map(
                    lambda message: encode({**message, "ts": FRESH_MS + 1000})),
                min_size=1, max_size=6))
@example([NESTED, b'{"request_id": "\\ud800", "ts": 0, "surge_multiplier": 1, "est_duration_min": 1, '
                  b'"rider_rating": 1, "candidates": [{"driver_id": "d1", "pickup_eta_min": 1}]}',
          encode({"request_id": "r", "ts": FRESH_MS, "surge_multiplier": 1, "est_duration_min": 1, "rider_rating": 1,
                  "candidates": [{"driver_id": "d1", "pickup_eta_min": 1}]})])
def test_a_batch_answers_each_input_as_it_would_be_answered_alone(scorer: Scorer, raws: list[bytes | None]) -> None:
    inputs = [Incoming(raw, f"key-{i}".encode(), Origin("score-requests", 0, i)) for i, raw in enumerate(raws)]
    together = asyncio.run(scorer.handle_batch(inputs))
    alone = [asyncio.run(scorer.handle(*incoming)) for incoming in inputs]
    assert [[_comparable(out) for out in outs] for outs in together] == [[_comparable(out) for out in outs]
                                                                         for outs in alone]
