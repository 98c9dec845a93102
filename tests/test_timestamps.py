"""The timestamp grammar (docs/spec.md §2.1): the validator and the JSON Schema's patterns accept the same `ts`
strings, the range is exact at both ends, and the one documented difference is confined to the days next to the ends."""

from __future__ import annotations

import calendar
import itertools
import re
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
from strategies import OFFSET_DECIDES, offset_decides

from schemas.json_schema import message_schema
from schemas.timestamps import TS_MAX_MS, check_ts

ISO_SCHEMA = message_schema("trip-event")["properties"]["ts"]["anyOf"][1]
ISO_VALIDATOR = jsonschema.Draft202012Validator(ISO_SCHEMA)
ISO_PATTERNS = [re.compile(part["pattern"]) for part in ISO_SCHEMA["allOf"]]


def parse_ts_ms(value: object) -> int | None:
    return check_ts(value)[0]


def schema_accepts(text: str) -> bool:
    return ISO_VALIDATOR.is_valid(text)


def patterns_accept(text: str) -> bool:
    """What the schema decides for a string without a final line feed, in a fraction of `jsonschema`'s time."""
    return all(pattern.search(text) for pattern in ISO_PATTERNS)


ACCEPTED = {
    "2026-03-02T08:15:00Z": 1772439300000,
    "2026-03-02T09:15:00+01:00": 1772439300000,
    "2026-03-02T02:45:00-05:30": 1772439300000,
    "2026-03-02T08:15:00-00:00": 1772439300000,
    "2026-03-02T08:15:00.2Z": 1772439300200,
    "2026-03-02T08:15:00.250Z": 1772439300250,
    "2026-03-02T08:15:00.123456789Z": 1772439300123,  # digits beyond the millisecond are dropped
    "2026-03-02T08:15:00.999999999+23:59": 1772352960999,
    "2024-02-29T00:00:00Z": 1709164800000,  # a leap day
    "2000-02-29T12:00:00Z": 951825600000,  # ÷400: a leap year
    "1970-01-01T00:00:00Z": 0,
    "1970-01-01T01:00:00+01:00": 0,
    "1969-12-31T23:00:00-01:00": 0,
    "5138-11-16T09:46:39.999Z": TS_MAX_MS - 1,
    "5138-11-16T09:46:39.999999999Z": TS_MAX_MS - 1,
    "5138-11-16T10:46:39.999+01:00": TS_MAX_MS - 1,
    "5138-11-17T09:45:39.999+23:59": TS_MAX_MS - 1,
}
REFUSED = [
    "2026-03-02t08:15:00Z", "2026-03-02 08:15:00Z", "2026-03-02_08:15:00Z", "2026-03-02\x0008:15:00Z",
    "2026-03-02\n08:15:00Z", "2026-03-02\U0001f600" "08:15:00Z", "2026-03-0208:15:00Z",  # separators
    "2026-03-02T08:15:00z", "2026-03-02T08:15:00", "2026-03-02T08:15:00+05", "2026-03-02T08:15:00+0530",
    "2026-03-02T08:15:00+05:60", "2026-03-02T08:15:00+24:00", "2026-03-02T08:15:00+05:30:15",
    "2026-03-02T08:15:00+0530:15", "2026-03-02T08:15:00 UTC", "2026-03-02T08:15:00+5:30",  # offsets
    "2026-03-02T08:15:00.Z", "2026-03-02T08:15:00.1234567890Z", "2026-03-02T08:15:00,5Z",  # fractions
    "2026-03-02T08:15Z", "2026-03-02T08:15:00:00Z", "2026-03-02T24:00:00Z", "2026-03-02T08:60:00Z",
    "2026-03-02T23:59:60Z",  # no leap second
    "2026-W10-1T08:15:00Z", "2026-061T08:15:00Z", "20260302T081500Z", "2026-3-2T08:15:00Z", "+2026-03-02T08:15:00Z",
    "２０２６-03-02T08:15:00Z", "2026-03-02T08:15:00Z\n", " 2026-03-02T08:15:00Z", "2026-03-02T08:15:00Z ",
    "2026-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z",
    "2026-00-10T00:00:00Z", "2026-01-00T00:00:00Z",  # calendar
    "1969-12-31T23:59:59.9996Z", "1969-12-31T23:59:59.999999999Z", "1969-12-31T23:59:59.999-00:00",
    "5138-11-16T09:46:40Z", "5138-11-16T09:46:40.000000001Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z",  # range
    "", "yesterday", "2026-03-02",
]


@pytest.mark.parametrize("text, expected_ms", ACCEPTED.items())
def test_the_grammar_accepts_rfc_3339_with_an_offset_and_reads_the_exact_instant(text: str, expected_ms: int) -> None:
    assert check_ts(text) == (expected_ms, None)
    assert schema_accepts(text), text


@pytest.mark.parametrize("text", REFUSED)
def test_what_the_grammar_refuses_the_validator_and_the_schema_refuse(text: str) -> None:
    ts_ms, reason = check_ts(text)
    assert ts_ms is None and reason, text
    assert not schema_accepts(text), text


@pytest.mark.parametrize("text", ["1970-01-01T00:59:59.999+01:00", "1969-12-31T23:58:59.999-00:01",
                                  "5138-11-16T08:46:40-01:00", "5138-11-17T09:46:40+23:59"])
def test_next_to_an_end_with_an_offset_only_the_validator_compares_the_instant(text: str) -> None:
    """The documented rule `iso_timestamps`: before 1970 or at 10^14 once the offset is applied."""
    assert check_ts(text)[0] is None and schema_accepts(text) and offset_decides(text)


@pytest.mark.parametrize("value, expected", [
    (0, 0), (TS_MAX_MS - 1, TS_MAX_MS - 1), (1e12, 10**12), (-0.0, 0), (TS_MAX_MS, None), (-1, None),
    (1.5, None), (float("nan"), None), (float("inf"), None), (True, None), (None, None), ([0], None),
])
def test_epoch_milliseconds_are_integers_in_range(value: object, expected: int | None) -> None:
    assert parse_ts_ms(value) == expected


def test_a_refusal_says_which_rule_failed() -> None:
    assert "RFC 3339" in check_ts("2026-03-02 08:15:00Z")[1]
    assert "no such day" in check_ts("2026-02-30T08:15:00Z")[1]
    assert "1970-01-01" in check_ts("1969-12-31T23:59:59Z")[1] and "10^14" in check_ts(TS_MAX_MS)[1]


def _is_date(year: int, month: int, day: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def test_the_calendar_pattern_is_the_gregorian_calendar() -> None:
    """Every day 01-31 of every month of 1969-2500 and of every century year 0100-9900 (leap years by ÷400)."""
    years = [*range(1969, 2501), *range(100, 10_000, 100)]
    for year, month, day in itertools.product(years, range(1, 13), range(1, 32)):
        text = f"{year:04d}-{month:02d}-{day:02d}T12:00:00Z"
        in_range = 1970 <= year <= 5138
        assert patterns_accept(text) == (_is_date(year, month, day) and in_range), text
        if in_range:
            assert (parse_ts_ms(text) is not None) == _is_date(year, month, day), text


OFFSETS = ["Z", "+00:00", "-00:00"] + [f"{sign}{h:02d}:{m:02d}" for sign in "+-" for h in range(24) for m in range(60)
                                       if (h, m) != (0, 0)]
TIMES = ["00:00:00", "00:00:00.000000001", "00:59:59.999", "09:46:39.999999999", "09:46:40", "12:00:00",
         "23:59:59.999999999"]


def _reference_ms(text: str) -> int:
    """The epoch ms of a well-formed date-time, computed apart from the validator (floored, exact)."""
    date, rest = text.split("T")
    offset = rest[-6:] if rest[-1] != "Z" else "+00:00"
    clock = rest[:-6] if rest[-1] != "Z" else rest[:-1]
    seconds, _, fraction = clock.partition(".")
    local = datetime.fromisoformat(f"{date}T{seconds}").replace(tzinfo=UTC)
    shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * (1 if offset[0] == "+" else -1)
    return (local - shift - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) + int(
        (fraction + "000")[:3])


def test_the_range_is_exact_and_the_schema_differs_only_on_the_days_next_to_the_ends() -> None:
    """Every offset, at times around each end, on the days at and next to both ends."""
    days = ("1969-12-30", *OFFSET_DECIDES, "1970-01-02", "5138-11-14", "5138-11-18")
    differing = 0
    for day, time, offset in itertools.product(days, TIMES, OFFSETS):
        text = f"{day}T{time}{offset}"
        reference = _reference_ms(text)
        assert parse_ts_ms(text) == (reference if 0 <= reference < TS_MAX_MS else None), text
        valid = parse_ts_ms(text) is not None
        if patterns_accept(text) != valid:
            # the documented rule `iso_timestamps`: the schema accepts, a day at an end, an offset that can cross it
            assert patterns_accept(text) and offset_decides(text), text
            differing += 1
    assert differing > 0  # the rule is real, not vacuous
