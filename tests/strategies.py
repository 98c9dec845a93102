"""Hypothesis strategies for hostile and valid Kafka inputs: trip events, score requests and raw message bytes.

Valid messages follow SPEC §2; invalid ones are valid messages with one field replaced, removed or retyped, plus
arbitrary JSON and structural extremes (deep nesting, huge sizes, numbers beyond float range, lone surrogates,
timestamps at and beyond every boundary).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from schemas.messages import EVENT_TYPES, SCORE_REQUEST, TRIP_EVENT, TRIP_EVENT_TYPES
from schemas.timestamps import TS_MAX_MS, check_ts

REMOVE = object()
"""A mutation value meaning: drop the field."""

ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-"
any_text = st.text(st.characters(exclude_categories=()), max_size=80)  # every code point, lone surrogates included
ids = st.text(ID_CHARS, min_size=1, max_size=64)
texts = st.one_of(ids, st.text(min_size=1, max_size=64))  # free-form ids: any Unicode but lone surrogates

OFFSET_DECIDES = {"1969-12-31": "-", "1970-01-01": "+", "5138-11-15": "-", "5138-11-16": "+-", "5138-11-17": "+"}
"""The local days next to an end of the `ts` range, with the offset signs that decide whether a date-time is inside."""


def offset_decides(text: str) -> bool:
    """Whether the date-time `text` is on a day where its offset decides the range (the rule `iso_timestamps`)."""
    return text[-1] != "Z" and text[-6] in OFFSET_DECIDES.get(text[:10], "") and text[-5:] != "00:00"


valid_ts_ms = st.one_of(st.integers(0, TS_MAX_MS - 1), st.sampled_from([0, 1, TS_MAX_MS - 1]))
iso_offsets = st.sampled_from(["Z", "+00:00", "+01:00", "-05:30", "+14:00", "-12:00", "+23:59"])


@st.composite
def iso_timestamps(draw: st.DrawFn) -> str:
    """ISO-8601 strings with an offset, from year 1 to 9999 (many outside the accepted range)."""
    year = draw(st.one_of(st.integers(1, 9999), st.sampled_from([1, 1969, 1970, 2024, 2026, 5138, 5139, 9999])))
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
    hour, minute, second = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    fraction = draw(st.sampled_from(["", ".5", ".123", ".123456"]))
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}{draw(iso_offsets)}"


timestamps = st.one_of(
    valid_ts_ms,
    iso_timestamps(),
    st.sampled_from([-1, -(10**15), TS_MAX_MS, 10**18, 2**63, 1.5, 1e14, -0.0, float("inf"), "1970-01-01T00:00:00",
                     "2026-01-01T00:00:00+25:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", ""]),
)
hostile_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.sampled_from([0, -0.0, 1, 5, 5.000001, 0.999999, 1e-320, 1.7976931348623157e308]),
    st.sampled_from([400, -400]).map(lambda exponent: (10 ** abs(exponent)) * (1 if exponent > 0 else -1)),
)
json_scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, any_text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(any_text, children, max_size=4)),
    max_leaves=12,
)
hostile_values = st.one_of(json_values, timestamps)
strict_json_values = st.recursive(  # what strict JSON allows (SPEC §2.2): finite, 64-bit integers, valid Unicode
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
              st.integers(-(2**63), 2**63 - 1), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children,
                                                                               max_size=4)),
    max_leaves=12,
)


@st.composite
def valid_trip_events(draw: st.DrawFn, driver_ids: st.SearchStrategy[str] = ids) -> dict[str, Any]:
    """A TripEvent that validates: the fields its type requires, in range, plus maybe unknown fields."""
    event_type = draw(st.sampled_from(EVENT_TYPES))
    event: dict[str, Any] = {
        "event_id": draw(texts), "event_type": event_type, "ts": draw(st.one_of(valid_ts_ms, valid_iso())),
        "driver_id": draw(driver_ids),
    }
    if event_type in TRIP_EVENT_TYPES:
        event["trip_id"] = draw(texts)
    if event_type == "trip_offered":
        event["pickup_eta_min"] = draw(st.floats(0, 1e6))
        event["surge_multiplier"] = draw(st.floats(1, 100))
        event["est_duration_min"] = draw(st.floats(1e-6, 1e6))
        event["rider_rating"] = draw(st.floats(1, 5))
    if event_type == "trip_rated":
        event["rating"] = draw(st.one_of(st.floats(1, 5), st.integers(1, 5)))
    if draw(st.booleans()):
        event["schema_version"] = 1
    if draw(st.integers(0, 9)) == 0:
        event[draw(st.text(max_size=10).filter(lambda name: name not in event))] = draw(strict_json_values)
    return event


@st.composite
def valid_iso(draw: st.DrawFn) -> str:
    """An ISO-8601 timestamp inside the accepted range."""
    return draw(iso_timestamps().filter(lambda text: _iso_in_range(text)))


def _iso_in_range(text: str) -> bool:
    return check_ts(text)[0] is not None


@st.composite
def valid_score_requests(draw: st.DrawFn, driver_ids: st.SearchStrategy[str] = ids) -> dict[str, Any]:
    """A ScoreRequest that validates: 1-200 distinct candidates."""
    drivers = draw(st.lists(driver_ids, min_size=1, max_size=draw(st.sampled_from([3, 50, 200])), unique=True))
    return {
        "request_id": draw(texts), "ts": draw(st.one_of(valid_ts_ms, valid_iso())),
        "surge_multiplier": draw(st.floats(1, 100)), "est_duration_min": draw(st.floats(1e-6, 1e6)),
        "rider_rating": draw(st.floats(1, 5)),
        "candidates": [{"driver_id": d, "pickup_eta_min": draw(st.floats(0, 1e6))} for d in drivers],
    }


@st.composite
def mutated(draw: st.DrawFn, messages: st.SearchStrategy[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """A message with one to three fields replaced by a hostile value or removed."""
    message = dict(draw(messages))
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        value = draw(st.one_of(st.just(REMOVE), hostile_values))
        if value is REMOVE:
            message.pop(name, None)
        else:
            message[name] = value
    return message


@st.composite
def mutated_candidates(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request whose candidate list is broken: a bad item, a duplicate, too many or none."""
    request = draw(valid_score_requests())
    candidates = list(request["candidates"])
    kind = draw(st.sampled_from(["item", "duplicate", "too_many", "empty", "not_object"]))
    if kind == "item":
        position = draw(st.integers(0, len(candidates) - 1))
        candidates[position] = draw(mutated(st.just(candidates[position]), ["driver_id", "pickup_eta_min"]))
    elif kind == "duplicate":
        candidates.append(dict(candidates[0]))
    elif kind == "too_many":
        candidates = [{"driver_id": f"d{i}", "pickup_eta_min": 1.0} for i in range(201)]
    elif kind == "empty":
        candidates = []
    else:
        candidates.append(draw(json_scalars))
    return {**request, "candidates": candidates}


def trip_event_values() -> st.SearchStrategy[Any]:
    """Decoded JSON values for `trip-events`: valid events, broken ones, and anything else JSON can hold."""
    names = [spec.name for spec in TRIP_EVENT]
    return st.one_of(valid_trip_events(), mutated(valid_trip_events(), names), json_values)


def score_request_values() -> st.SearchStrategy[Any]:
    """Decoded JSON values for `score-requests`: valid requests, broken ones, and anything else JSON can hold."""
    names = [spec.name for spec in SCORE_REQUEST]
    return st.one_of(valid_score_requests(), mutated(valid_score_requests(), names), mutated_candidates(),
                     json_values)


def structural_extremes() -> st.SearchStrategy[bytes]:
    """Raw values no generator of JSON values reaches: deep nesting, huge sizes, bad bytes, bad escapes."""
    depth = st.sampled_from([100, 1_000, 10_000, 100_000])
    return st.one_of(
        depth.map(lambda n: b"[" * n + b"]" * n),
        depth.map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        depth.map(lambda n: b"[" * n),
        st.sampled_from([5000]).map(lambda n: b"1" * n),
        st.sampled_from([5000]).map(lambda n: b'{"ts": ' + b"9" * n + b"}"),
        st.sampled_from([b'"\\ud800"', b'{"event_id": "\\udfff"}',
                         b"\x00", b"\xef\xbb\xbf{}", b"{}" * 10, b"NaN", b"-Infinity", b"null", b"  ", b"\xc3\x28"]),
        st.integers(600_000, 1_000_000).map(lambda n: b'{"event_id": "' + b"x" * n + b'"}'),  # still one Kafka message
        st.binary(max_size=200),
    )


def encode_value(value: Any, ascii_only: bool) -> bytes:
    """A JSON value as Kafka bytes, with NaN/Infinity written as Python's json writes them; surrogates escaped."""
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


def raw_messages(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes | None]:
    """Kafka values: encoded `values`, structural extremes, empty and missing values."""
    return st.one_of(
        st.builds(encode_value, values, st.booleans()),
        structural_extremes(),
        st.sampled_from([None, b""]),
    )
