"""JSON Schema (draft 2020-12) of every Kafka message, derived from the field specifications for other languages.

`tripscore schemas export` writes them to `schemas/json/`; `--check` fails when the committed files are stale.
Rules JSON Schema cannot state exactly are listed in `INEXPRESSIBLE` (and in the README and docs/spec.md §2.3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.fields import FLOAT_MAX, Field, RequiredWhen
from schemas.messages import DEAD_LETTER, SCORE_REQUEST, SCORE_RESPONSE, TRIP_EVENT
from schemas.timestamps import CALENDAR, DATE_TIME, RANGE, TS_MAX_MS

DRAFT = "https://json-schema.org/draft/2020-12/schema"
JSON_DIR = Path(__file__).parent / "json"
FINAL_LINE_FEED = "\n$"
"""Matches a string that ends in a line feed, alike in every engine; `not` it beside every anchored pattern, as
Python's `$` (which `jsonschema` uses) also matches before a final line feed, and ECMA-262's and RE2's do not."""

MESSAGES: dict[str, tuple[str, tuple[Field, ...], str]] = {
    "trip-event": ("TripEvent", TRIP_EVENT, "A value of topic `trip-events`, keyed by driver_id."),
    "score-request": ("ScoreRequest", SCORE_REQUEST,
                      "A value of topic `score-requests`, keyed by request_id. Candidates' driver_ids are unique."),
    "score-response": ("ScoreResponse", SCORE_RESPONSE, "A value of topic `risk-scores`, keyed by request_id."),
    "dead-letter": ("DeadLetter", DEAD_LETTER, "A value of the dead-letter topic: a rejected input and why."),
}

INEXPRESSIBLE = {
    "unique_candidates": "the candidates of a ScoreRequest have distinct driver_ids (`uniqueItems` compares whole "
                         "items only)",
    "iso_timestamps": "on a day next to either end of the range, an offset other than Z or +/-00:00 decides whether "
                      "a date-time is inside, which a pattern cannot compute: the schema accepts local 1969-12-31 "
                      "and 5138-11-15 with a negative offset, 1970-01-01 and 5138-11-17 with a positive one, "
                      "5138-11-16 with either; tripscore compares the instant exactly",
    "finite_numbers": "numbers are finite, anywhere in a message: JSON has no NaN or Infinity, yet lenient parsers "
                      "(Python's json) read them, and a number beyond +/-1.8e308 reads as an infinity",
    "unicode_strings": "strings and keys are valid Unicode, anywhere in a message: no lone UTF-16 surrogate (an "
                       "escape such as \\ud800)",
    "max_depth": "arrays and objects nest at most 64 levels, anywhere in a message (the message object is level 1)",
    "integer_size": "an integer (a number written without fraction or exponent) fits in 64 bits, -2^63 to 2^63-1, "
                    "anywhere in a message: beyond, parsers read it differently (JavaScript rounds it to a double)",
}
"""The rules the validator enforces and the schema cannot state exactly, by name."""


def anchored(pattern: str) -> str:
    """A JSON Schema `pattern` matching the strings Python's `re.fullmatch(pattern)` matches (with the guard
    `FINAL_LINE_FEED`), read alike by ECMA-262, RE2 and Python: the pattern is written in their common subset."""
    return f"^(?:{pattern})$"


def _patterned(*patterns: dict[str, str]) -> dict[str, Any]:
    """A string schema that matches every one of `patterns` (`{"pattern": ..., "description": ...}`)."""
    matches: dict[str, Any] = dict(patterns[0]) if len(patterns) == 1 else {"allOf": list(patterns)}
    return {"type": "string", **matches, "not": {"pattern": FINAL_LINE_FEED}}


def _number(spec: Field) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer" if spec.kind == "int" else "number"}
    if spec.equals is not None:
        schema["const"] = spec.equals
        return schema
    if spec.ge is not None:
        schema["minimum"] = spec.ge
    if spec.gt is not None:
        schema["exclusiveMinimum"] = spec.gt
    schema["maximum"] = spec.le if spec.le is not None else FLOAT_MAX
    return schema


def _string(spec: Field) -> dict[str, Any]:
    schema = _patterned({"pattern": anchored(spec.pattern.pattern)}) if spec.pattern else {"type": "string"}
    if spec.min_len:
        schema["minLength"] = spec.min_len
    if spec.max_len is not None:
        schema["maxLength"] = spec.max_len
    return schema


def _timestamp() -> dict[str, Any]:
    return {"anyOf": [
        {"type": "integer", "minimum": 0, "exclusiveMaximum": TS_MAX_MS, "description": "epoch milliseconds"},
        {"description": "RFC 3339 date-time (docs/spec.md, section 2.1)", **_patterned(
            {"pattern": anchored(DATE_TIME), "description": "date T time, 0-9 fractional digits, offset"},
            {"pattern": CALENDAR, "description": "a day its month has"},
            {"pattern": RANGE, "description": "from 1970-01-01 up to epoch ms 10^14; see rule iso_timestamps"},
        )},
    ]}


def value_schema(spec: Field) -> dict[str, Any]:
    """The schema of one field's value, null excluded."""
    if spec.kind in ("float", "int"):
        return _number(spec)
    if spec.kind == "str":
        return _string(spec)
    if spec.kind == "enum":
        return {"type": "string", "enum": list(spec.choices)}
    if spec.kind == "bool":
        return {"type": "boolean"}
    if spec.kind == "ts":
        return _timestamp()
    if spec.kind == "list":
        schema: dict[str, Any] = {"type": "array", "items": object_schema(spec.items)}
        if spec.min_len:
            schema["minItems"] = spec.min_len
        if spec.max_len is not None:
            schema["maxItems"] = spec.max_len
        return schema
    return object_schema(spec.items)


def field_schema(spec: Field) -> dict[str, Any]:
    """The schema of one field; null is allowed where the validator treats it as absent, or the field is nullable."""
    schema = value_schema(spec)
    if spec.nullable or spec.required is not True:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return {"description": spec.doc, **schema} if spec.doc else schema


def object_schema(specs: tuple[Field, ...]) -> dict[str, Any]:
    """An object of `specs`: unknown properties allowed, conditional requirements as `if`/`then`."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {spec.name: field_schema(spec) for spec in specs},
        "required": [spec.name for spec in specs if spec.required is True],
    }
    conditions: dict[RequiredWhen, list[str]] = {}
    for spec in specs:
        if isinstance(spec.required, RequiredWhen):
            conditions.setdefault(spec.required, []).append(spec.name)
    if conditions:
        schema["allOf"] = [_required_when(condition, names) for condition, names in conditions.items()]
    return schema


def _required_when(condition: RequiredWhen, names: list[str]) -> dict[str, Any]:
    return {
        "if": {"properties": {condition.field: {"enum": sorted(condition.values)}}, "required": [condition.field]},
        "then": {"properties": {name: {"not": {"type": "null"}} for name in names}, "required": names},
    }


def message_schema(file_name: str) -> dict[str, Any]:
    """The complete schema document of one message."""
    title, specs, description = MESSAGES[file_name]
    return {"$schema": DRAFT, "title": title, "description": description, **object_schema(specs)}


def rendered(file_name: str) -> str:
    """The committed text of one schema file."""
    return json.dumps(message_schema(file_name), indent=2) + "\n"


def export(folder: Path = JSON_DIR) -> list[Path]:
    """Write every message's schema to `<folder>/<name>.schema.json`; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name in MESSAGES:
        path = folder / f"{file_name}.schema.json"
        path.write_text(rendered(file_name))
        written.append(path)
    return written


def stale(folder: Path = JSON_DIR) -> list[Path]:
    """The schema files of `folder` that are missing or differ from what the specifications give."""
    paths = {name: folder / f"{name}.schema.json" for name in MESSAGES}
    return [path for name, path in paths.items() if not path.is_file() or path.read_text() != rendered(name)]
