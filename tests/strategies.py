"""Hypothesis strategies for hostile and valid Kafka inputs: trip events, score requests and raw message bytes.

Valid messages follow docs/spec.md §2; invalid ones are valid messages with one field replaced, removed or retyped, plus
arbitrary JSON and structural extremes (deep nesting, huge sizes, numbers beyond float range, lone surrogates,
timestamps at and beyond every boundary). `contract_texts` writes any of them as raw JSON text with raw tokens in
place (the parity corpus of the JSON Schema files).
"""

from __future__ import annotations

import json
import sys
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
END_DAYS = ["1969-12-30", *OFFSET_DECIDES, "1970-01-02", "5138-11-14", "5138-11-18"]
ODD_DAYS = ["2024-02-29", "2023-02-29", "2000-02-29", "2100-02-29", "2400-02-29", "2026-04-31", "2026-04-30",
            "2026-13-01", "2026-00-10", "2026-01-00", "2026-01-32", "0000-01-01", "9999-12-31", "2026-W10-1",
            "2026-061", "20260302", "2026-3-2", "+2026-03-02", "２０２６-03-02", "2026-03-0２"]
ODD_TIMES = ["24:00:00", "23:59:60", "08:60:00", "08:15", "08:00:00:00", "8:15:00", "081500", "08:15:00.", "T08:15:00"]
SEPARATORS = ["T"] * 12 + ["t", " ", "_", "\x00", "\n", "\U0001f600", "", "TT"]
ODD_OFFSETS = ["z", "+05", "-0530", "+0530", "+05:60", "+24:00", "-24:00", "+05:30:15", "+0530:15", " UTC", "", "+5:30",
               "Z\n", "+05:30 ", "UTC", "GMT+1", "+05:30Z", "Z+00:00"]
offsets = st.one_of(
    st.sampled_from(["Z", "+00:00", "-00:00"]),
    st.builds("{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)),
)
fractions = st.integers(0, 9).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n)).map(
    lambda digits: f".{digits}" if digits else "")
clock = st.builds("{:02d}:{:02d}:{:02d}".format, st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))


@st.composite
def any_dates(draw: st.DrawFn) -> str:
    """YYYY-MM-DD of years 1969-5139 with month 00-13 and day 00-32: real days, and days no month has."""
    return f"{draw(st.integers(1969, 5139)):04d}-{draw(st.integers(0, 13)):02d}-{draw(st.integers(0, 32)):02d}"


@st.composite
def date_times(draw: st.DrawFn) -> str:
    """Date-times in the grammar of docs/spec.md §2.1, often on the days at either end of the range (in or out
    of it)."""
    day = draw(st.one_of(any_dates(), st.sampled_from(END_DAYS)))
    time = draw(st.one_of(clock, st.sampled_from(["00:00:00", "00:59:59", "09:46:39", "09:46:40", "23:59:59"])))
    return f"{day}T{time}{draw(fractions)}{draw(offsets)}"


@st.composite
def timestamp_texts(draw: st.DrawFn) -> str:
    """Strings a `ts` may be sent as: date-times of the grammar at and across the ends of the range and the calendar,
    and near misses: other separators, offsets, fractions and dates, ISO-8601 forms the grammar refuses, and junk."""
    if draw(st.booleans()):
        return draw(date_times())
    day = draw(st.one_of(any_dates(), st.sampled_from(END_DAYS + ODD_DAYS)))
    time = draw(st.one_of(clock, st.sampled_from(ODD_TIMES)))
    fraction = draw(st.one_of(fractions, st.sampled_from([".", ",5", ".1234567890", ".000000000001"])))
    offset = draw(st.one_of(offsets, st.sampled_from(ODD_OFFSETS)))
    text = f"{day}{draw(st.sampled_from(SEPARATORS))}{time}{fraction}{offset}"
    junk = draw(st.sampled_from(["", "", "", "", "\n", " ", "lower", "upper"]))
    return text.lower() if junk == "lower" else text.upper() if junk == "upper" else text + junk


timestamps = st.one_of(
    valid_ts_ms,
    timestamp_texts(),
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
# what strict JSON allows (docs/spec.md §2.2): finite, 64-bit integers, valid Unicode
strict_json_values = st.recursive(
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
    """A date-time inside the accepted range."""
    return draw(date_times().filter(lambda text: check_ts(text)[0] is not None))


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


# Raw texts of the contracts, for the parity corpus of the JSON Schema files (tests/test_schema_parity.py).

RAW = "\x00raw token\x00"
"""A placeholder value: `contract_texts` writes the message as JSON, then puts a raw token where it stands."""
FLOAT_MAX_INT = int(sys.float_info.max)
RAW_NUMBERS = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E+2", "-0", "-0.0", "0e0", "1e-400", "1.0", "1e19",
    "1.7976931348623157e308", "1.7976931348623159e308", "5.0000000000000000001", "4.9999999999999999999",
    str(2**53 + 1), str(2**63 - 1), str(2**63), str(-(2**63)), str(-(2**63) - 1), str(2**64), str(10**30),
    str(FLOAT_MAX_INT), str(FLOAT_MAX_INT + 1), str(10**309), "9" * 5_000,
]
"""Numbers JSON parsers read differently: NaN/Infinity (not JSON), beyond a double, beyond 64 bits, fractions
beyond a double's precision, integers written as floats."""
RAW_OTHER = [
    "true", "null", "[]", "{}", '"\\ud800"', '"x\\udfff"', '"\\ud83d\\ude00"', '"\\u0000"', '"\\u2028"', '"x\\n"',
    '{"\\ud800": 1}', '["\\udc00"]', '"\\u00e9"',
    "01", "+1", ".5", "1.", "0x10", "'x'", "undefined", "[1,]", "NaNa", "--1", '"\\x41"',  # not JSON
]
NESTING = [1, 2, 61, 62, 63, 64, 65, 66, 100, 1_000, 5_000]


def nested_text(depth: int, text: str) -> str:
    """`depth` levels of arrays and objects, alternating, each holding the string `text` beside the next level."""
    opened = "".join(f'{{"{text}": ' if level % 2 else f'["{text}", ' for level in range(depth))
    return opened + "0" + "".join("}" if level % 2 else "]" for level in reversed(range(depth)))


raw_tokens = st.one_of(
    st.sampled_from(RAW_NUMBERS),
    st.sampled_from(RAW_OTHER),
    st.builds(nested_text, st.sampled_from(NESTING), st.sampled_from(["", "a", "\u00e9", "\U0001f600"])),
)


@st.composite
def contract_texts(draw: st.DrawFn, messages: st.SearchStrategy[Any], ts_fields: tuple[str, ...],
                   items: str | None = None) -> bytes:
    """Raw Kafka values of one contract: its messages (valid, broken, any JSON) written as JSON text, often with
    one value replaced: a `ts` by a timestamp text, a known or unknown field (of the message or of one of its `items`)
    by a raw token, the framing changed (a BOM, a repeated key, whitespace, a trailing comma)."""
    message = draw(messages)
    change = draw(st.sampled_from(["none", "ts", "token", "token", "item", "framing"]))
    token = draw(raw_tokens)
    if isinstance(message, dict):
        message = dict(message)
        if change == "ts" and ts_fields:
            message[draw(st.sampled_from(ts_fields))] = draw(timestamps)
        elif change == "token" or (change == "item" and not items):
            message[draw(st.one_of(st.sampled_from(sorted(message) or ["x"]), st.text(max_size=6)))] = RAW
        elif change == "item" and isinstance(message.get(items), list) and message[items]:
            position = draw(st.integers(0, len(message[items]) - 1))
            item = message[items][position]
            if isinstance(item, dict):
                item = {**item, draw(st.one_of(st.sampled_from(sorted(item) or ["x"]), st.text(max_size=6))): RAW}
            message[items] = [*message[items][:position], item, *message[items][position + 1:]]
    text = json.dumps(message, ensure_ascii=draw(st.booleans()), allow_nan=True).replace(json.dumps(RAW), token)
    if change == "framing":
        frame = draw(st.sampled_from(["bom", "whitespace", "nul", "comma", "repeat"]))
        if frame == "bom":
            text = "\ufeff" + text  # JSON forbids it; parsers may skip it, the contract refuses it
        elif frame == "whitespace":
            text = f" \n{text}\t\r\n"
        elif frame == "nul":
            text += "\x00"
        elif text.endswith("}") and text != "{}":
            text = text[:-1] + (",}" if frame == "comma" else ', "ts": 0}')  # a repeated key: the last one counts
    return text.encode("utf-8", "surrogatepass")
