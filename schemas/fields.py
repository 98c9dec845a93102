"""Field specifications: one declarative definition per message, used for validation and Spark schemas."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from schemas.strict_json import LONE_SURROGATE, MESSAGE, Problem, has_lone_surrogate, value_problems
from schemas.timestamps import check_ts

ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")
BASE64_PATTERN = re.compile(r"[A-Za-z0-9+/]*={0,2}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
FLOAT_MAX = sys.float_info.max
"""The largest double: the limit of a number field with no upper bound, in the validator and the schema alike."""
FIELD_KINDS = ("str", "enum", "float", "int", "bool", "ts", "list", "object")
COMPOSITE_KINDS = frozenset({"list", "object"})


@dataclass(frozen=True)
class RequiredWhen:
    """A `required` condition: the field is required when the string field `field` holds one of `values`."""

    field: str
    values: frozenset[str]

    def __call__(self, message: Mapping[str, Any]) -> bool:
        # an unhashable value (a JSON list or object) is not one of the values: its own field check reports it
        return isinstance(value := message.get(self.field), str) and value in self.values


@dataclass(frozen=True)
class Field:
    """One message field: its type, when it is required and its allowed range."""

    name: str
    kind: str  # one of FIELD_KINDS
    required: bool | RequiredWhen = True
    nullable: bool = False  # required means present, but its value may be null
    min_len: int | None = None
    max_len: int | None = None
    pattern: re.Pattern[str] | None = None
    choices: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    equals: Any = None
    items: tuple[Field, ...] = ()  # the fields of each list item, or of the object
    doc: str = ""
    # the value checker, built once with this field's limits bound (None for a list or an object: see check_object)
    check: Checker | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FIELD_KINDS:
            raise ValueError(f"field {self.name!r}: unknown kind {self.kind!r}; expected one of {FIELD_KINDS}")
        if not self.name.isidentifier():
            raise ValueError(f"field {self.name!r}: names are identifiers (builders take them as arguments)")
        composite = self.kind in COMPOSITE_KINDS
        object.__setattr__(self, "check", None if composite else _CHECKER_BUILDERS[self.kind](self))

    @cached_property
    def out_name(self) -> str:
        """Key of the normalised value: timestamps become epoch milliseconds under `<name>_ms`."""
        return f"{self.name}_ms" if self.kind == "ts" else self.name

    def is_required(self, message: Mapping[str, Any]) -> bool:
        """Whether this field must be present in `message` (with a value, unless nullable)."""
        return self.required(message) if callable(self.required) else self.required

    def is_missing(self, message: Mapping[str, Any]) -> bool:
        """Whether `message`, which has no value for this field, breaks its `required` rule."""
        return self.is_required(message) and not (self.nullable and self.name in message)


Check = tuple[Any, str | None]
"""A checked scalar: (normalised value, None) or (None, what is wrong)."""
Checker = Callable[[Any], Check]


def _number_checker(spec: Field) -> Checker:
    """Compares the value itself with the limits (Python compares an int with a float exactly), as JSON Schema does."""
    integer, equals, ge, gt, le = spec.kind == "int", spec.equals, spec.ge, spec.gt, spec.le

    def check(value: Any) -> Check:
        kind = type(value)
        # exact types first (JSON gives nothing else); bool is an int subclass but not a number here
        if kind is not float and kind is not int and (kind is bool or not isinstance(value, int | float)):
            return None, f"expected a number, got {kind.__name__}"
        if not -FLOAT_MAX <= value <= FLOAT_MAX:  # NaN, an infinity, or an integer beyond every double
            return None, "must be a finite number"
        if integer and value != int(value):
            return None, "expected an integer"
        if equals is not None and value != equals:
            return None, f"must be {equals}, got {value}"
        if ge is not None and value < ge:
            return None, f"must be >= {ge:g}, got {value}"
        if gt is not None and value <= gt:
            return None, f"must be > {gt:g}, got {value}"
        if le is not None and value > le:
            return None, f"must be <= {le:g}, got {value}"
        return (int(value) if integer else float(value)), None

    return check


def _str_checker(spec: Field) -> Checker:
    min_len, max_len = spec.min_len or 0, spec.max_len
    fullmatch = spec.pattern.fullmatch if spec.pattern is not None else None
    pattern_text = spec.pattern.pattern if spec.pattern is not None else ""

    def check(value: Any) -> Check:
        if not isinstance(value, str):
            return None, f"expected a string, got {type(value).__name__}"
        if has_lone_surrogate(value):
            return None, LONE_SURROGATE
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


def _bool_checker(spec: Field) -> Checker:
    def check(value: Any) -> Check:
        if type(value) is not bool:
            return None, f"expected true or false, got {type(value).__name__}"
        return value, None

    return check


def _ts_checker(spec: Field) -> Checker:
    return check_ts


_CHECKER_BUILDERS: dict[str, Callable[[Field], Checker]] = {
    "float": _number_checker, "int": _number_checker, "str": _str_checker, "enum": _enum_checker,
    "bool": _bool_checker, "ts": _ts_checker,
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
        where = f"{prefix}[{index}]" if index is not None else prefix or MESSAGE
        return None, [(where, f"expected a JSON object, got {type(message).__name__}")]
    out: dict[str, Any] = {}
    problems: list[Problem] = []
    for spec in specs:
        value = message.get(spec.name)
        if value is None:
            if spec.is_missing(message):
                problems.append((_path(prefix, index, spec.name), "is required"))
            out[spec.out_name] = None
        elif spec.check is None:  # a list of objects, or an object
            path = _path(prefix, index, spec.name)
            checked = _check_list(spec, value, path) if spec.kind == "list" else check_object(spec.items, value, path)
            out[spec.out_name], composite_problems = checked
            problems += composite_problems
        else:
            out[spec.out_name], reason = spec.check(value)
            if reason is not None:
                problems.append((_path(prefix, index, spec.name), reason))
    return (out if not problems else None), problems


def check_message(specs: tuple[Field, ...], message: Any) -> tuple[dict | None, list[Problem]]:
    """The complete check of a decoded message: strict JSON anywhere in it (`value_problems`), then every field."""
    problems = value_problems(message)
    return (None, problems) if problems else check_object(specs, message)


def message_builder(name: str, specs: tuple[Field, ...]) -> Callable[..., dict[str, Any]]:
    """A function `name(<field>, ...)` returning the message dict of `specs`, keys in spec order.

    Generated once (as dataclasses generate `__init__`): a dict literal, so a builder called per candidate costs
    no more than one written by hand, and its keys cannot drift from the contract.
    """
    names = [spec.name for spec in specs]
    source = f"def {name}({', '.join(names)}):\n    return {{{', '.join(f'{n!r}: {n}' for n in names)}}}\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # names are checked identifiers of our own specs
    builder = namespace[name]
    builder.__doc__ = f"A message of fields {', '.join(names)}."
    return builder
