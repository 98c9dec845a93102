"""The `ts` of docs/spec.md §2, defined once: the grammar the validator parses and the JSON Schema's patterns state.

A timestamp is epoch milliseconds as an integer, or an RFC 3339 date-time (docs/spec.md §2.1):

    date-time = YYYY "-" MM "-" DD "T" hh ":" mm ":" ss [ "." 1*9DIGIT ] offset
    offset    = "Z" / ( "+" / "-" ) hh ":" mm

`T` and `Z` upper case; month 01-12, a day its month has (Gregorian leap years), hour 00-23, minute and second 00-59
(no leap second). The instant, offset applied, lies in [1970-01-01T00:00:00Z, epoch ms 10^14), compared exactly;
digits beyond the millisecond are dropped (the instant is floored to its millisecond).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

TS_MAX_MS = 10**14
"""Timestamps are epoch milliseconds in [0, TS_MAX_MS): 1970 to 5138-11-16T09:46:40Z, whichever way written."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)

_HOUR = "(?:[01][0-9]|2[0-3])"
_SIXTY = "[0-5][0-9]"
DATE_TIME = (
    "[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    f"T{_HOUR}:{_SIXTY}:{_SIXTY}" r"(?:\.[0-9]{1,9})?"
    f"(?:Z|[+-]{_HOUR}:{_SIXTY})"
)
"""The grammar's shape as a regular expression: what the validator matches in full, and the schema's first pattern."""

CALENDAR = (
    "^(?:[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)T"
)
"""The schema's second pattern: a day its month has; 29 February only in a leap year (÷4, and not ÷100 unless ÷400)."""

_NONZERO_OFFSET = "(?:(?:0[1-9]|1[0-9]|2[0-3]):[0-5][0-9]|00:(?:0[1-9]|[1-5][0-9]))"
RANGE = (
    "^(?:1970-01-(?:0[2-9]|[12][0-9]|3[01])T|1970-(?:0[2-9]|1[0-2])-|19(?:7[1-9]|[89][0-9])-"
    "|(?:[2-4][0-9]{3}|50[0-9]{2}|51[0-2][0-9]|513[0-7])-|5138-(?:0[1-9]|10)-|5138-11-(?:0[1-9]|1[0-5])T"
    "|1970-01-01T|1969-12-31T[0-9:.]*-" + _NONZERO_OFFSET
    + "|5138-11-16T(?:0[0-8]|09:[0-3][0-9]|09:4[0-5]|09:46:[0-3][0-9])|5138-11-1[67]T[0-9:.]*[+]" + _NONZERO_OFFSET
    + ")"
)
"""The schema's third pattern: the range, exact for the offsets Z, +00:00 and -00:00. On a day next to either end
another offset decides whether the instant is inside, which a pattern cannot compute: there it accepts the day (local
1969-12-31 and 5138-11-15 with a negative offset, 1970-01-01 and 5138-11-17 with a positive one, 5138-11-16 with
either), and the validator compares the instant (the documented rule `iso_timestamps`)."""

_DATE_TIME = re.compile(DATE_TIME)
_FORM = ("expected epoch milliseconds (an integer) or an RFC 3339 date-time such as 2026-03-02T08:15:00.250Z "
         "(T, 0-9 fractional digits, offset Z, +hh:mm or -hh:mm)")
_OUT_OF_RANGE = "must be from 1970-01-01T00:00:00Z up to epoch ms 10^14 (5138-11-16T09:46:40Z, excluded)"


def check_ts(value: Any) -> tuple[int | None, str | None]:
    """(epoch milliseconds, None) for a valid timestamp, else (None, what is wrong with it)."""
    kind = type(value)
    if kind is int:
        return (value, None) if 0 <= value < TS_MAX_MS else (None, _OUT_OF_RANGE)
    if kind is float:  # an integral number such as 1e12 is an integer in JSON
        if not value.is_integer():
            return None, _FORM
        return (int(value), None) if 0 <= value < TS_MAX_MS else (None, _OUT_OF_RANGE)
    if kind is not str or _DATE_TIME.fullmatch(value) is None:
        return None, _FORM
    try:
        ts_ms = (datetime.fromisoformat(value) - EPOCH) // ONE_MS  # exact: fromisoformat keeps 6 of the digits
    except ValueError:
        return None, "is not a date: its month has no such day"
    return (ts_ms, None) if 0 <= ts_ms < TS_MAX_MS else (None, _OUT_OF_RANGE)


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as an RFC 3339 date-time in UTC with milliseconds, such as 2026-03-02T08:15:00.250Z."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
