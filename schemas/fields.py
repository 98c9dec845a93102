"""Field specifications: one declarative definition per message, used for validation and Spark schemas."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

Problem = tuple[str, str]
"""A validation problem: (field path, what is wrong)."""

ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")
FIELD_KINDS = ("str", "enum", "float", "int", "ts", "list")


@dataclass(frozen=True)
class Field:
    """One message field: its type, when it is required and its allowed range."""

    name: str
    kind: str  # one of FIELD_KINDS
    required: bool | Callable[[Mapping[str, Any]], bool] = True
    min_len: int | None = None
    max_len: int | None = None
    pattern: re.Pattern[str] | None = None
    choices: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    equals: Any = None
    items: tuple[Field, ...] = ()
    doc: str = ""
    # the value checker, built once with this field's limits bound (None for a list: its items are objects)
    check: Checker | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FIELD_KINDS:
            raise ValueError(f"field {self.name!r}: unknown kind {self.kind!r}; expected one of {FIELD_KINDS}")
        object.__setattr__(self, "check", None if self.kind == "list" else _CHECKER_BUILDERS[self.kind](self))

    @cached_property
    def out_name(self) -> str:
        """Key of the normalised value: timestamps become epoch milliseconds under `<name>_ms`."""
        return f"{self.name}_ms" if self.kind == "ts" else self.name

    def is_required(self, message: Mapping[str, Any]) -> bool:
        """Whether this field must be present in `message`."""
        return self.required(message) if callable(self.required) else self.required


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


def has_lone_surrogate(text: str) -> bool:
    """Whether `text` holds a UTF-16 surrogate JSON let through (`"\\ud800"`): not Unicode, so not encodable."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


Check = tuple[Any, str | None]
"""A checked scalar: (normalised value, None) or (None, what is wrong)."""
Checker = Callable[[Any], Check]


def _number_checker(spec: Field) -> Checker:
    integer, equals, ge, gt, le = spec.kind == "int", spec.equals, spec.ge, spec.gt, spec.le
    isfinite = math.isfinite

    def check(value: Any) -> Check:
        kind = type(value)
        # exact types first (JSON gives nothing else); bool is an int subclass but not a number here
        if kind is not float and kind is not int and (kind is bool or not isinstance(value, int | float)):
            return None, f"expected a number, got {kind.__name__}"
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            return None, "must be a finite number"
        if not isfinite(number):
            return None, "must be a finite number"
        if integer and number != int(number):
            return None, "expected an integer"
        if equals is not None and number != equals:
            return None, f"must be {equals}, got {value}"
        if ge is not None and number < ge:
            return None, f"must be >= {ge:g}, got {value}"
        if gt is not None and number <= gt:
            return None, f"must be > {gt:g}, got {value}"
        if le is not None and number > le:
            return None, f"must be <= {le:g}, got {value}"
        return (int(value) if integer else number), None

    return check


def _str_checker(spec: Field) -> Checker:
    min_len, max_len = spec.min_len or 0, spec.max_len
    fullmatch = spec.pattern.fullmatch if spec.pattern is not None else None
    pattern_text = spec.pattern.pattern if spec.pattern is not None else ""

    def check(value: Any) -> Check:
        if not isinstance(value, str):
            return None, f"expected a string, got {type(value).__name__}"
        if has_lone_surrogate(value):
            return None, "is not valid Unicode (a lone UTF-16 surrogate)"
        if len(value) < min_len:
            return None, f"must have at least {min_len} character(s)"
        if max_len is not None and len(value) > max_len:
            return None, f"must have at most {max_len} characters, got {len(value)}"
        if fullmatch is not None and not fullmatch(value):
            return None, f"has characters outside {pattern_text}"
        return value, None

    return check


def _enum_checker(spec: Field) -> Checker:
    choices, listed = frozenset(spec.choices), ", ".join(spec.choices)

    def check(value: Any) -> Check:
        if not isinstance(value, str):
            return None, f"expected a string, got {type(value).__name__}"
        if value not in choices:
            return None, f"unknown value {value[:40]!r}; expected one of {listed}"
        return value, None

    return check


def _ts_checker(spec: Field) -> Checker:
    def check(value: Any) -> Check:
        ts_ms = parse_ts_ms(value)
        if ts_ms is None:
            return None, "expected ISO-8601 with an offset or epoch milliseconds, from 1970 up to epoch ms 10^14"
        return ts_ms, None

    return check


_CHECKER_BUILDERS: dict[str, Callable[[Field], Checker]] = {
    "float": _number_checker, "int": _number_checker, "str": _str_checker, "enum": _enum_checker, "ts": _ts_checker,
}


def _check_list(spec: Field, value: Any, path: str) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    if not isinstance(value, list):
        return None, [(path, f"expected a list, got {type(value).__name__}")]
    if spec.min_len is not None and len(value) < spec.min_len:
        return None, [(path, f"must have at least {spec.min_len} item(s)")]
    if spec.max_len is not None and len(value) > spec.max_len:
        return None, [(path, f"must have at most {spec.max_len} items, got {len(value)}")]
    items: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for index, item in enumerate(value):
        normalised, item_problems = check_object(spec.items, item, path, index)
        if item_problems:
            problems += item_problems
        else:
            items.append(normalised)
    return (items if not problems else None), problems


def _path(prefix: str, index: int | None, name: str) -> str:
    if index is not None:
        prefix = f"{prefix}[{index}]"
    return f"{prefix}.{name}" if prefix else name


def check_object(specs: tuple[Field, ...], message: Any, prefix: str = "",
                 index: int | None = None) -> tuple[dict | None, list[Problem]]:
    """Validate a decoded JSON object against `specs`: (normalised dict, []) or (None, every problem).

    `index` is the object's position in the list at `prefix`. This runs once per event and per candidate,
    so paths are only built for problems.
    """
    if not isinstance(message, dict):
        where = f"{prefix}[{index}]" if index is not None else prefix or "<message>"
        return None, [(where, f"expected a JSON object, got {type(message).__name__}")]
    out: dict[str, Any] = {}
    problems: list[Problem] = []
    for spec in specs:
        value = message.get(spec.name)
        if value is None:
            if spec.is_required(message):
                problems.append((_path(prefix, index, spec.name), "is required"))
            out[spec.out_name] = None
        elif spec.check is None:  # a list of objects
            out[spec.out_name], list_problems = _check_list(spec, value, _path(prefix, index, spec.name))
            problems += list_problems
        else:
            out[spec.out_name], reason = spec.check(value)
            if reason is not None:
                problems.append((_path(prefix, index, spec.name), reason))
    return (out if not problems else None), problems
