"""Strict JSON (docs/spec.md §2.2): NaN and Infinity, integers beyond 64 bits, lone surrogates and nesting beyond 64
levels are refused anywhere in a message, unknown fields included, each with its own reason, whatever the content."""

from __future__ import annotations

import json
import sys

import pytest

from schemas.fields import Field, check_object
from schemas.messages import decode_score_request, decode_trip_event, validate_trip_event
from schemas.strict_json import (
    INTEGER_SIZE,
    KEY_NOT_UNICODE,
    LONE_SURROGATE,
    MAX_DEPTH,
    MESSAGE,
    NOT_FINITE,
    TOO_DEEP,
    value_problems,
)

EVENT = '{"event_id": "e", "event_type": "shift_started", "ts": 0, "driver_id": "d"'
REQUEST = ('{"request_id": "r", "ts": 0, "surge_multiplier": 1, "est_duration_min": 9, "rider_rating": 5, '
           '"candidates": [{"driver_id": "d", "pickup_eta_min": 1.0'
           )


def event_with(extra: str) -> bytes:
    """The valid event EVENT with the raw JSON member `extra` added."""
    return f"{EVENT}, {extra}}}".encode()


def nested(depth: int, inner: str = "1", text: str = "") -> str:
    """`depth` levels of arrays and objects, alternating, around `inner`; `text` is a string beside each level."""
    opened = "".join(f'{{"{text}": ' if level % 2 else f'["{text}", ' for level in range(depth))
    closed = "".join("}" if level % 2 else "]" for level in reversed(range(depth)))
    return opened + inner + closed


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "[0, NaN]", '{"y": Infinity}'])
def test_nan_and_infinity_are_refused_in_unknown_fields_too(token: str) -> None:
    event, problems = decode_trip_event(event_with(f'"colour": {token}'))
    assert event is None and len(problems) == 1
    path, reason = problems[0]
    assert path.startswith("colour") and reason == NOT_FINITE


def test_nan_in_a_known_field_names_the_field() -> None:
    offer = EVENT.replace('"shift_started"', '"trip_offered"') + (
        ', "trip_id": "t", "pickup_eta_min": NaN, "surge_multiplier": 1, "est_duration_min": 1, "rider_rating": 5}')
    assert decode_trip_event(offer.encode()) == (None, [("pickup_eta_min", NOT_FINITE)])
    request = REQUEST.replace("1.0", "-Infinity") + "}]}"
    assert decode_score_request(request.encode()) == (None, [("candidates[0].pickup_eta_min", NOT_FINITE)])


@pytest.mark.parametrize("literal, valid", [
    (str(2**63 - 1), True), (str(-(2**63)), True), (str(2**63), False), (str(-(2**63) - 1), False),
    (str(2**64), False), (str(10**30), False), (str(int(sys.float_info.max)), False), ("9" * 5_000, False),
], ids=lambda value: str(value)[:24])
def test_integers_beyond_64_bits_are_refused_with_one_reason_whatever_their_length(literal: str, valid: bool) -> None:
    for path, raw in (("x", event_with(f'"x": {literal}')), ("x[0]", event_with(f'"x": [{literal}]')),
                      ("pickup_eta_min", event_with(f'"pickup_eta_min": {literal}'))):
        problems = decode_trip_event(raw)[1]
        if valid:
            assert (path, INTEGER_SIZE) not in problems and (path == "pickup_eta_min" or problems == [])
        else:
            assert problems == [(path, INTEGER_SIZE)]


def test_a_float_beyond_2_to_the_63_is_not_an_integer_and_is_kept() -> None:
    for literal in ("1e19", "-9.3e18", "1.8446744073709552e19"):
        event, problems = decode_trip_event(event_with(f'"x": {literal}'))
        assert problems == [] and event is not None, literal


@pytest.mark.parametrize("text", ["", "é", "\U0001f600"])
@pytest.mark.parametrize("where", ["top", "unknown"])
def test_the_depth_limit_is_64_levels_whatever_the_content(text: str, where: str) -> None:
    """The message object is level 1; the same limit and reason for arrays or objects, ASCII or not, at any depth."""
    for depth in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 1_000, 100_000):
        raw = nested(depth, text=text) if where == "top" else event_with(f'"x": {nested(depth - 1, text=text)}')
        problems = decode_trip_event(raw.encode() if isinstance(raw, str) else raw)[1]
        if depth <= MAX_DEPTH:
            assert (MESSAGE, TOO_DEEP) not in problems, (depth, problems)
            assert where == "top" or problems == []
        else:
            assert problems == [(MESSAGE, TOO_DEEP)], (depth, problems)


def test_lone_surrogates_are_refused_in_values_and_keys_anywhere() -> None:
    assert decode_trip_event(event_with('"x": ["\\ud800"]')) == (None, [("x[0]", LONE_SURROGATE)])
    assert decode_trip_event(event_with('"x": {"\\udfff": 1}')) == (None, [("x", KEY_NOT_UNICODE)])
    assert decode_trip_event(event_with('"x": "\\ud83d\\ude00"'))[1] == []  # a surrogate pair is one character


def test_a_decoded_value_is_held_to_the_same_rules() -> None:
    base = {"event_id": "e", "event_type": "shift_started", "ts": 0, "driver_id": "d"}
    assert validate_trip_event({**base, "x": {"y": float("nan")}}) == (None, [("x.y", NOT_FINITE)])
    assert validate_trip_event({**base, "x": [2**63]}) == (None, [("x[0]", INTEGER_SIZE)])
    deep: list = []
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert validate_trip_event({**base, "x": deep}) == (None, [(MESSAGE, TOO_DEEP)])
    assert value_problems(json.loads(nested(MAX_DEPTH))) == []


def test_every_problem_is_named_once() -> None:
    value = {"a": [float("inf"), "\ud800", 2**70], "b": json.loads(nested(MAX_DEPTH + 5)), "c": json.loads(
        nested(MAX_DEPTH + 5))}
    assert value_problems(value) == [("a[0]", NOT_FINITE), ("a[1]", LONE_SURROGATE), ("a[2]", INTEGER_SIZE),
                                     (MESSAGE, TOO_DEEP)]


def test_numbers_compare_with_their_limits_exactly() -> None:
    """An integer just above the largest double rounds down to it as a float: it must be refused, as JSON Schema
    refuses it. Checked on the field check alone, since a message refuses it earlier for its size."""
    unbounded = (Field("x", "float"),)
    largest = int(sys.float_info.max)
    assert check_object(unbounded, {"x": largest}) == ({"x": sys.float_info.max}, [])
    assert check_object(unbounded, {"x": largest + 1})[1] == [("x", "must be a finite number")]
    rating = (Field("r", "float", le=5),)
    assert check_object(rating, {"r": 5})[1] == [] and check_object(rating, {"r": 5.000000000000001})[1]
