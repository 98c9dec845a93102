"""The `ts` of SPEC §2, defined once: epoch milliseconds, or an ISO-8601 date-time with an offset."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

TS_MAX_MS = 10**14
"""Timestamps are epoch milliseconds in [0, TS_MAX_MS): 1970 to the year 5138, whichever way they are written."""


def parse_ts_ms(value: Any) -> int | None:
    """Epoch milliseconds from epoch-ms (number) or ISO-8601 with an offset; None when not a valid time."""
    kind = type(value)
    if kind is int:
        return value if 0 <= value < TS_MAX_MS else None
    if kind is float:
        return int(value) if math.isfinite(value) and 0 <= value < TS_MAX_MS and value == int(value) else None
    if kind is str and 10 <= len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00", 1) if value.endswith("Z") else value)
            if parsed.tzinfo is None:
                return None
            ts_ms = int(round(parsed.timestamp() * 1000))
        except (ValueError, OverflowError):  # not a time, or one whose offset moves it out of datetime's range
            return None
        return ts_ms if 0 <= ts_ms < TS_MAX_MS else None
    return None
