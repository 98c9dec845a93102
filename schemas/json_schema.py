"""JSON Schema (draft 2020-12) of every Kafka message, derived from the field specifications for other languages.

`tripscore schemas export` writes them to `schemas/json/`; `--check` fails when the committed files are stale.
Rules JSON Schema cannot state exactly are listed in `INEXPRESSIBLE` (and in the README).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from schemas.fields import Field, RequiredWhen
from schemas.messages import DEAD_LETTER, SCORE_REQUEST, SCORE_RESPONSE, TRIP_EVENT

DRAFT = "https://json-schema.org/draft/2020-12/schema"
JSON_DIR = Path(__file__).parent / "json"
FLOAT_MAX = sys.float_info.max  # the validator rejects numbers beyond float range as not finite
TS_MS_END = 10**14
# ISO-8601 date, time and offset as `datetime.isoformat` writes them (space or T; seconds and fraction optional);
# the year range approximates [1970, epoch ms 1e14) and the day of the month is not checked against the month
ISO_TS_PATTERN = (
    r"^(19[7-9][0-9]|[2-4][0-9]{3}|50[0-9]{2}|51[0-3][0-9])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.,][0-9]+)?)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):?[0-5][0-9](:[0-5][0-9]([.][0-9]+)?)?)$(?!\n)"
)

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
    "iso_timestamps": "an ISO-8601 timestamp is a real date and time within [1970-01-01, epoch ms 1e14) once its "
                      "offset is applied: the schema checks the shape and approximates the year range, and tripscore "
                      "also accepts the other ISO-8601 spellings of Python's `datetime.fromisoformat`",
    "finite_numbers": "numbers are finite: JSON text has no NaN, but a lenient parser may produce one",
    "unicode_strings": "strings are valid Unicode: no lone UTF-16 surrogate (an escape such as \\ud800)",
}
"""The rules the validator enforces and the schema cannot state exactly, by name."""


def anchored(pattern: re.Pattern[str]) -> str:
    """A JSON Schema `pattern` matching what `pattern.fullmatch` matches, in ECMA-262 and Python alike.

    `(?!\\n)` stops Python's `$` from matching before a final newline (ECMA's `$` never does).
    """
    return f"^(?:{pattern.pattern})$(?!\\n)"


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
    schema: dict[str, Any] = {"type": "string"}
    if spec.min_len:
        schema["minLength"] = spec.min_len
    if spec.max_len is not None:
        schema["maxLength"] = spec.max_len
    if spec.pattern is not None:
        schema["pattern"] = anchored(spec.pattern)
    return schema


def _timestamp() -> dict[str, Any]:
    return {"anyOf": [
        {"type": "integer", "minimum": 0, "exclusiveMaximum": TS_MS_END, "description": "epoch milliseconds"},
        {"type": "string", "minLength": 10, "maxLength": 40, "pattern": ISO_TS_PATTERN,
         "description": "ISO-8601 with an offset"},
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
