"""Strict JSON (docs/spec.md §2.2): decoding a Kafka value, and the rules every value keeps whatever its fields.

Anywhere in a message, unknown fields included: numbers are finite (JSON has no NaN or Infinity, and a number beyond
the range of a double reads as one), integers fit in 64 bits, strings and keys are valid Unicode (no lone UTF-16
surrogate), and arrays and objects nest at most `MAX_DEPTH` levels. A message that breaks one is refused before its
fields are checked.
"""

from __future__ import annotations

import json
import math
from typing import Any

Problem = tuple[str, str]
"""A validation problem: (field path, what is wrong)."""
MESSAGE = "<message>"
"""The path of a problem with the whole message."""
MAX_DEPTH = 64
"""Levels of arrays and objects a message may nest; the message object is level 1."""
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""The integers a message may hold: a signed 64-bit integer (Java's long, Go's int64)."""

NOT_FINITE = "must be a finite number (JSON has no NaN or Infinity; a number beyond +/-1.8e308 reads as one)"
INTEGER_SIZE = "is an integer beyond 64 bits (from -2^63 to 2^63-1)"
LONE_SURROGATE = "is not valid Unicode (a lone UTF-16 surrogate)"
KEY_NOT_UNICODE = "has a key that is not valid Unicode (a lone UTF-16 surrogate)"
TOO_DEEP = f"nests arrays and objects deeper than {MAX_DEPTH} levels"


def has_lone_surrogate(text: str) -> bool:
    """Whether `text` holds a UTF-16 surrogate JSON let through (`"\\ud800"`): not Unicode, so not encodable."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _integer(literal: str) -> int:
    """An integer literal's value; past 20 characters (beyond 64 bits) a stand-in just out of range, so a number of
    any length gets the size problem rather than Python's limit on digits (4,300)."""
    if len(literal) <= 20:
        return int(literal)
    return INT_MIN - 1 if literal.startswith("-") else INT_MAX + 1


_DECODER = json.JSONDecoder(parse_constant=float, parse_int=_integer)  # NaN, Infinity: refused by `value_problems`


def decode_json(raw: bytes | str | None) -> tuple[Any, list[Problem]]:
    """The decoded JSON value of a Kafka message, or a problem naming why it is not JSON.

    NaN and Infinity are read as floats, for `value_problems` to name the field that holds them.
    """
    if raw is None or raw in (b"", ""):
        return None, [(MESSAGE, "empty message")]
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, [(MESSAGE, f"not valid UTF-8 (byte {exc.start})")]
    try:
        return _DECODER.decode(raw), []
    except ValueError as exc:
        return None, [(MESSAGE, f"not valid JSON: {exc}")]
    except RecursionError:  # far beyond MAX_DEPTH: the same problem as any depth beyond it
        return None, [(MESSAGE, TOO_DEEP)]


def value_problems(value: Any) -> list[Problem]:
    """Where a decoded value breaks the rules of strict JSON: [] when it keeps them, else each place and why."""
    if _keeps(value, MAX_DEPTH):
        return []
    problems: list[Problem] = []
    _collect(value, "", MAX_DEPTH, problems)
    return list(dict.fromkeys(problems))  # the depth problem once, however many containers are too deep


def _bad_key(key: Any) -> bool:
    return type(key) is str and has_lone_surrogate(key)


def _keeps(value: Any, levels: int) -> bool:
    """Whether `value`, with `levels` levels of nesting left, keeps every rule (one pass, no paths)."""
    kind = type(value)
    if kind is str:
        return not has_lone_surrogate(value)
    if kind is float:
        return math.isfinite(value)
    if kind is int:
        return INT_MIN <= value <= INT_MAX
    if kind is dict:
        return levels > 0 and not any(map(_bad_key, value)) and all(_keeps(item, levels - 1) for item in value.values())
    if kind is list:
        return levels > 0 and all(_keeps(item, levels - 1) for item in value)
    return True


def _collect(value: Any, path: str, levels: int, problems: list[Problem]) -> None:
    """Append each problem of `value` at `path` ("" for the message), descending at most `levels` levels."""
    kind = type(value)
    where = path or MESSAGE
    if kind is str and has_lone_surrogate(value):
        problems.append((where, LONE_SURROGATE))
    elif kind is float and not math.isfinite(value):
        problems.append((where, NOT_FINITE))
    elif kind is int and not INT_MIN <= value <= INT_MAX:
        problems.append((where, INTEGER_SIZE))
    elif (kind is dict or kind is list) and levels == 0:
        problems.append((MESSAGE, TOO_DEEP))
    elif kind is dict:
        for key, item in value.items():
            if _bad_key(key):
                problems.append((where, KEY_NOT_UNICODE))
            else:
                _collect(item, f"{path}.{key}" if path else key, levels - 1, problems)
    elif kind is list:
        for index, item in enumerate(value):
            _collect(item, f"{path}[{index}]", levels - 1, problems)
