"""JSON as the contracts read it: decoding a Kafka value, and the problems found on the way."""

from __future__ import annotations

import json
from typing import Any

Problem = tuple[str, str]
"""A validation problem: (field path, what is wrong)."""
MESSAGE = "<message>"
"""The path of a problem with the whole message."""


def has_lone_surrogate(text: str) -> bool:
    """Whether `text` holds a UTF-16 surrogate JSON let through (`"\\ud800"`): not Unicode, so not encodable."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _reject_constant(name: str) -> float:
    """JSON has no NaN/Infinity; keep them as floats so the field check names the field."""
    return float(name.replace("Infinity", "inf"))


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # one decoder: json.loads would build one per call


def decode_json(raw: bytes | str | None) -> tuple[Any, list[Problem]]:
    """The decoded JSON value of a Kafka message, or a problem naming why it is not JSON."""
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
    except RecursionError:
        return None, [(MESSAGE, "not valid JSON: nested too deeply")]
