"""The common case of `check_object`, generated once per message: a message with no problem, checked in one pass.

A fast checker returns exactly what `check_message` returns for a valid message, or None when the message may
have a problem (or is merely unusual: non-ASCII text, an integer beyond 2^53 in a float field, an unknown field
holding a float beyond 2^63); the caller then runs `check_message`, which names every problem. The messages live
only in `fields.py`; the limits are read from the same `Field`s and from `strict_json`, and `tests/test_fuzz.py`
checks that both paths decide every input alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from schemas.fields import Field
from schemas.strict_json import INT_MAX, INT_MIN, MAX_DEPTH
from schemas.timestamps import TS_MAX_MS

FastChecker = Callable[[Any], dict[str, Any] | None]
EXACT_INT = 2**53  # integers up to this convert to float exactly, so float and int comparisons agree
FLOAT_FROM_INT = 2.0**63
"""orjson reads an integer written beyond 64 bits as a float of at least this size: such a float takes the slow path,
which tells the integer (refused) from a float written so (accepted)."""
ColumnCheck = Callable[[list[Any]], bool]
_NONE_KNOWN: frozenset[str] = frozenset()  # the known fields of an object inside an unknown field
_CHARACTER_CLASS_PLUS = re.compile(r"\[[^\]\\^\n]*\]\+")  # `[...]+` with no negation, escape or newline


def fast_checker(name: str, specs: tuple[Field, ...], level: int = 1) -> FastChecker:
    """A function `name(message)`: the normalised message when it is valid under `specs`, else None.

    `level` is the message's depth (1 for a Kafka value, 3 for the objects of a list in it).
    """
    namespace: dict[str, Any] = {"TS_MAX_MS": TS_MAX_MS, "EXACT_INT": EXACT_INT, "FLOAT_FROM_INT": FLOAT_FROM_INT,
                                 "known": frozenset(spec.name for spec in specs), "unknown_plain": unknown_plain}
    always = sum(spec.required is True and not spec.nullable for spec in specs)  # fields a valid message has
    lines = [f"def {name}(message):", "    if type(message) is not dict:", "        return None",
             "    get = message.get", f"    present = {always}"]  # known keys with a value; more keys: unknown ones
    for i, spec in enumerate(specs):
        namespace[f"spec{i}"] = spec
        lines += [f"    v{i} = get({spec.name!r})", f"    if v{i} is None:"]
        if spec.required is True and not spec.nullable:
            lines += ["        return None", "    else:"]
        else:
            lines += [f"        if spec{i}.is_missing(message):\n            return None", "    else:",
                      "        present += 1"]
        lines += [f"        {line}" for line in _value_lines(spec, f"v{i}", f"spec{i}", level, namespace)]
    lines += [f"    if len(message) != present and not unknown_plain(message, known, {MAX_DEPTH - level}):",
              "        return None"]
    lines.append(f"    return {{{', '.join(f'{spec.out_name!r}: v{i}' for i, spec in enumerate(specs))}}}")
    exec("\n".join(lines), namespace)  # names are checked identifiers of our own specs
    checker = namespace[name]
    checker.__doc__ = f"The normalised message of fields {', '.join(s.name for s in specs)} when valid, else None."
    return checker


def _value_lines(spec: Field, v: str, s: str, level: int, namespace: dict[str, Any]) -> list[str]:
    """Statements that leave the normalised value of a present field in `v`, or return None."""
    if spec.kind == "str":
        tests = [f"type({v}) is not str", f"not {v}.isascii()", f"len({v}) < {spec.min_len or 0}"]
        if spec.max_len is not None:
            tests.append(f"len({v}) > {spec.max_len}")
        if spec.pattern is not None:
            tests.append(f"{s}.pattern.fullmatch({v}) is None")
        return [f"if {' or '.join(tests)}:", "    return None"]
    if spec.kind == "enum":
        namespace[f"{s}_choices"] = frozenset(spec.choices)
        return [f"if type({v}) is not str or {v} not in {s}_choices:", "    return None"]
    if spec.kind == "bool":
        return [f"if type({v}) is not bool:", "    return None"]
    if spec.kind in ("float", "int"):
        return _number_lines(spec, v, s)
    if spec.kind == "ts":
        return [f"if type({v}) is not int or not 0 <= {v} < TS_MAX_MS:",
                f"    {v}, reason = {s}.check({v})", "    if reason is not None:", "        return None"]
    item_level = level + 1 if spec.kind == "object" else level + 2  # a list's objects are a level below it
    namespace[f"{s}_items"] = fast_checker(f"{spec.name}_item", spec.items, item_level)
    if spec.kind == "object":
        return [f"{v} = {s}_items({v})", f"if {v} is None:", "    return None"]
    head = [  # a list of objects
        f"if type({v}) is not list or len({v}) < {spec.min_len or 0}"
        + (f" or len({v}) > {spec.max_len}:" if spec.max_len is not None else ":"),
        "    return None",
    ]
    loop = ["items = []", f"for item in {v}:", f"    item = {s}_items(item)", "    if item is None:",
            "        return None", "    items.append(item)", f"{v} = items"]
    namespace[f"{s}_columns"] = columns = column_checker(spec.items)
    if columns is None:
        return [*head, *loop]
    return [*head, f"if not {s}_columns({v}):", *(f"    {line}" for line in loop)]  # the list as it is, or item-wise


def _number_lines(spec: Field, v: str, s: str) -> list[str]:
    """A float field takes a float or an exact integer (as a float); an int field an exact integer only."""
    if spec.kind == "float":
        lines = [f"if type({v}) is not float:", f"    if type({v}) is not int or not -EXACT_INT <= {v} <= EXACT_INT:",
                 "        return None", f"    {v} = float({v})"]
        tests = [f"not -FLOAT_FROM_INT < {v} < FLOAT_FROM_INT"]  # NaN, infinities, maybe an integer beyond 64 bits
    else:
        lines = []
        tests = [f"type({v}) is not int", f"not -EXACT_INT <= {v} <= EXACT_INT"]
    for bound, test in (("ge", "<"), ("gt", "<="), ("le", ">")):
        if getattr(spec, bound) is not None:
            tests.append(f"{v} {test} {s}.{bound}")
    if spec.equals is not None:
        tests.append(f"{v} != {s}.equals")
    return [*lines, f"if {' or '.join(tests)}:", "    return None"]


def unknown_plain(message: dict[Any, Any], known: frozenset[str], levels: int) -> bool:
    """Whether the fields of `message` outside `known` surely keep strict JSON, nesting at most `levels` levels."""
    return all(type(key) is str and key.isascii() and plain(value, levels) for key, value in message.items()
               if key not in known)


def plain(value: Any, levels: int) -> bool:
    """Whether `value` surely keeps strict JSON as orjson read it: ASCII text (so no lone surrogate), 64-bit integers,
    floats below `FLOAT_FROM_INT`, at most `levels` levels of arrays and objects. False sends it to the slow path."""
    kind = type(value)
    if kind is str:
        return value.isascii()
    if kind is int:
        return INT_MIN <= value <= INT_MAX
    if kind is float:
        return -FLOAT_FROM_INT < value < FLOAT_FROM_INT
    if kind is dict:
        return levels > 0 and unknown_plain(value, _NONE_KNOWN, levels - 1)
    if kind is list:
        return levels > 0 and all(plain(item, levels - 1) for item in value)
    return value is None or kind is bool


def column_checker(specs: tuple[Field, ...]) -> ColumnCheck | None:
    """For list items whose fields are all required strings and floats: a check of the whole list, one pass per
    field, that is True when every item is already its normalised self (a dict of exactly these fields, each valid
    and needing no conversion); None for other fields. False sends the list to the item-wise check."""
    checks: list[tuple[str, ColumnCheck]] = []
    for spec in specs:
        check = (_string_column(spec) if spec.kind == "str" else _float_column(spec) if spec.kind == "float"
                 else None)
        if check is None or spec.required is not True or spec.nullable or spec.equals is not None:
            return None
        checks.append((spec.name, check))
    width = len(checks)

    def check_columns(items: list[Any]) -> bool:
        try:
            columns = [[item[name] for item in items] for name, _ in checks]
            exact = sum(map(len, items)) == width * len(items)  # every item has its fields and no other
        except (TypeError, KeyError, IndexError):
            return False
        return exact and all(check(column) for (_, check), column in zip(checks, columns, strict=True))

    return check_columns


def _string_column(spec: Field) -> ColumnCheck | None:
    """All ASCII `str`s within the length limits that match the pattern, tested on the column joined by newlines
    (only for a `[...]+` pattern, which cannot match across a newline); None for other patterns."""
    joined_pattern = None
    if spec.pattern is not None:
        if not _CHARACTER_CLASS_PLUS.fullmatch(spec.pattern.pattern):
            return None
        joined_pattern = re.compile(f"{spec.pattern.pattern}(?:\n{spec.pattern.pattern})*")
    shortest, longest = spec.min_len or 0, spec.max_len

    def check(column: list[Any]) -> bool:
        if not column:
            return True
        if set(map(type, column)) != {str}:
            return False
        joined = "\n".join(column)
        if not joined.isascii() or joined.count("\n") != len(column) - 1 or min(map(len, column)) < shortest:
            return False
        if longest is not None and max(map(len, column)) > longest:
            return False
        return joined_pattern is None or joined_pattern.fullmatch(joined) is not None

    return check


def _float_column(spec: Field) -> ColumnCheck:
    """All finite `float`s within the bounds (an integer, which the item-wise check converts, answers False)."""

    def check(column: list[Any]) -> bool:
        if not column:
            return True
        if set(map(type, column)) != {float}:
            return False
        total = sum(column)
        if total - total != 0.0:  # a NaN or an infinity (or a sum that overflows: the item-wise check decides)
            return False
        low, high = min(column), max(column)
        if low <= -FLOAT_FROM_INT or high >= FLOAT_FROM_INT:
            return False
        return not ((spec.ge is not None and low < spec.ge) or (spec.gt is not None and low <= spec.gt)
                    or (spec.le is not None and high > spec.le))

    return check
