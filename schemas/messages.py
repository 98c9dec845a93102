"""The Kafka message contracts of docs/spec.md §2, defined once: decoding, validation and builders."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.fast_check import FastChecker, fast_checker
from schemas.fields import (
    BASE64_PATTERN,
    ID_PATTERN,
    SHA256_PATTERN,
    Field,
    RequiredWhen,
    check_message,
    message_builder,
)
from schemas.strict_json import MESSAGE, Problem, decode_json

SCHEMA_VERSION = 1
EVENT_TYPES = (
    "shift_started",
    "shift_ended",
    "trip_offered",
    "offer_accepted",
    "offer_declined",
    "trip_completed",
    "trip_rated",
)
TRIP_EVENT_TYPES = frozenset(EVENT_TYPES[2:])
STRATEGIES = ("model", "distance_only", "error")
FEATURE_STATUSES = ("present", "partial", "stale", "missing")
DEAD_LETTER_MAX_BYTES = 900_000
"""A DeadLetter never exceeds this (Kafka's default limit is 1 MiB per message); a larger original is cut."""
MAX_PROBLEMS = 50
MAX_REASON_CHARS = 300
Decoded = tuple[dict[str, Any] | None, list[Problem]]
"""A decoder's outcome: (the normalised message, []) or (None, every problem)."""


def _for_types(*types: str) -> RequiredWhen:
    """A `required` condition: the field is required for these event types."""
    return RequiredWhen("event_type", frozenset(types))


TRIP_EVENT: tuple[Field, ...] = (
    Field("event_id", "str", min_len=1, max_len=64, doc="unique id of the event"),
    Field("event_type", "enum", choices=EVENT_TYPES),
    Field("ts", "ts", doc="event time: RFC 3339 date-time, or epoch ms"),
    Field("driver_id", "str", min_len=1, max_len=64, pattern=ID_PATTERN),
    Field("trip_id", "str", required=_for_types(*TRIP_EVENT_TYPES), min_len=1, max_len=64),
    Field("pickup_eta_min", "float", required=_for_types("trip_offered"), ge=0),
    Field("surge_multiplier", "float", required=_for_types("trip_offered"), ge=1),
    Field("est_duration_min", "float", required=_for_types("trip_offered"), gt=0),
    Field("rider_rating", "float", required=_for_types("trip_offered"), ge=1, le=5),
    Field("rating", "float", required=_for_types("trip_rated"), ge=1, le=5),
    Field("schema_version", "int", required=False, equals=SCHEMA_VERSION),
)

CANDIDATE: tuple[Field, ...] = (
    Field("driver_id", "str", min_len=1, max_len=64, pattern=ID_PATTERN),
    Field("pickup_eta_min", "float", ge=0),
)

SCORE_REQUEST: tuple[Field, ...] = (
    Field("request_id", "str", min_len=1, max_len=64),
    Field("ts", "ts"),
    Field("surge_multiplier", "float", ge=1),
    Field("est_duration_min", "float", gt=0),
    Field("rider_rating", "float", ge=1, le=5),
    Field("candidates", "list", min_len=1, max_len=200, items=CANDIDATE),
)


RANKED_CANDIDATE: tuple[Field, ...] = (
    Field("driver_id", "str", min_len=1, max_len=64, pattern=ID_PATTERN),
    Field("rank", "int", ge=1, doc="1 = offer first"),
    Field("decline_risk", "float", nullable=True, ge=0, le=1, doc="null when not scored"),
    Field("pickup_eta_min", "float", ge=0),
    Field("expected_cost_min", "float", ge=0, doc="pickup_eta_min + decline_risk x re-dispatch penalty"),
    Field("feature_status", "enum", choices=FEATURE_STATUSES),
)

TIMINGS: tuple[Field, ...] = (
    Field("features", "float", ge=0, doc="milliseconds reading features"),
    Field("model", "float", ge=0, doc="milliseconds deriving, predicting and ranking"),
    Field("total", "float", ge=0, doc="milliseconds in the scorer"),
)

SCORE_RESPONSE: tuple[Field, ...] = (
    Field("request_id", "str", doc="the request's id; of a malformed request, its key when it has none"),
    Field("strategy", "enum", choices=STRATEGIES),
    Field("reason", "str", nullable=True, doc="why distance-only, or the validation message of an error"),
    Field("model_version", "str", nullable=True),
    Field("ranked", "list", max_len=200, items=RANKED_CANDIDATE, doc="candidates in offer order"),
    Field("timings_ms", "object", items=TIMINGS),
    Field("scored_at", "ts"),
)

DEAD_LETTER_ERROR: tuple[Field, ...] = (
    Field("field", "str", doc="path of the field, `<message>` for the whole message"),
    Field("reason", "str"),
)

DEAD_LETTER: tuple[Field, ...] = (
    Field("original_b64", "str", pattern=BASE64_PATTERN, doc="the rejected bytes (the first ones if cut), base64"),
    Field("original_bytes", "int", ge=0, doc="the original's full size"),
    Field("original_sha256", "str", pattern=SHA256_PATTERN, doc="SHA-256 of the full original, hex"),
    Field("original_truncated", "bool", doc="true when original_b64 holds only the first bytes (kept under 1 MiB)"),
    Field("topic", "str", doc="where it was read"),
    Field("partition", "int", nullable=True, ge=0),
    Field("offset", "int", nullable=True, ge=0),
    Field("error", "str", doc="every problem on one line: `field: reason; field: reason`"),
    Field("errors", "list", items=DEAD_LETTER_ERROR),
    Field("stage", "str", doc="the stage that rejected it: stream, score, ..."),
    Field("failed_at", "ts"),
)

ranked_candidate = message_builder("ranked_candidate", RANKED_CANDIDATE)
"""One entry of `ScoreResponse.ranked` (positional arguments in field order: called per candidate)."""
_timings = message_builder("timings", TIMINGS)
_score_response = message_builder("score_response", SCORE_RESPONSE)
_dead_letter_error = message_builder("dead_letter_error", DEAD_LETTER_ERROR)
_dead_letter = message_builder("dead_letter", DEAD_LETTER)
ZERO_TIMINGS = _timings(**{spec.name: 0.0 for spec in TIMINGS})


def guarded(decode: Callable[[Any], Decoded]) -> Callable[[Any], Decoded]:
    """`decode`, made total: whatever it raises becomes a problem naming the exception, so no input stops a stage."""

    @functools.wraps(decode)
    def total(raw: Any) -> Decoded:
        try:
            return decode(raw)
        except Exception as exc:  # noqa: BLE001 - the per-message guard: one outcome per input, whatever happens
            return None, [(MESSAGE, f"could not be decoded: {type(exc).__name__}: {exc}")]

    return total


def _fast_json(raw: Any) -> Any:
    """orjson's value of `raw` (several times the standard decoder), or None when it refuses: NaN, a lone
    surrogate, a BOM... The standard decoder then decides, and names the problem."""
    try:
        return orjson.loads(raw)
    except (ValueError, TypeError):
        return None


def _duplicate_candidates(candidates: Sequence[dict[str, Any]]) -> list[int]:
    """Positions of the candidates whose `driver_id` an earlier candidate already has (none, in one set, usually)."""
    ids = [candidate["driver_id"] for candidate in candidates]
    if len(set(ids)) == len(ids):
        return []
    seen: set[str] = set()
    duplicates = []
    for index, driver_id in enumerate(ids):
        if driver_id in seen:
            duplicates.append(index)
        seen.add(driver_id)
    return duplicates


_fast_trip_event = fast_checker("trip_event", TRIP_EVENT)
_fast_score_request_fields = fast_checker("score_request", SCORE_REQUEST)


def _fast_score_request(message: Any) -> dict[str, Any] | None:
    """The fast check of a ScoreRequest: its fields, then its candidates' uniqueness."""
    request = _fast_score_request_fields(message)
    return request if request is not None and not _duplicate_candidates(request["candidates"]) else None


def _validated(message: Any, fast: FastChecker, explain: Callable[[Any], Decoded]) -> Decoded:
    """`fast`'s message when it takes it, else `explain`'s verdict (which names every problem)."""
    valid = fast(message)
    return (valid, []) if valid is not None else explain(message)


def _decoded(raw: bytes | str | None, fast: FastChecker, explain: Callable[[Any], Decoded]) -> Decoded:
    """One value in a single fast pass (orjson, `fast`) when it is valid; else the standard decoder and `explain`."""
    valid = fast(_fast_json(raw))
    if valid is not None:
        return valid, []
    message, problems = decode_json(raw)
    return (None, problems) if problems else explain(message)


def validate_trip_event(message: Any) -> Decoded:
    """A normalised TripEvent (timestamp as `ts_ms`) or every problem with it."""
    return _validated(message, _fast_trip_event, explain_trip_event)


def explain_trip_event(message: Any) -> Decoded:
    """The complete check of a TripEvent, which names every problem: where the fast path hands over."""
    return check_message(TRIP_EVENT, message)


@guarded
def decode_trip_event(raw: bytes | str | None) -> Decoded:
    """Decode and validate one `trip-events` value; a valid one in a single fast pass (`fast_check`)."""
    return _decoded(raw, _fast_trip_event, explain_trip_event)


def validate_score_request(message: Any) -> Decoded:
    """A normalised ScoreRequest or every problem with it (duplicate candidates included)."""
    return _validated(message, _fast_score_request, explain_score_request)


def explain_score_request(message: Any) -> Decoded:
    """The complete check of a ScoreRequest, which names every problem: where the fast path hands over."""
    request, problems = check_message(SCORE_REQUEST, message)
    if request is not None:
        problems += [(f"candidates[{index}].driver_id", "duplicate candidate")
                     for index in _duplicate_candidates(request["candidates"])]
    return (None, problems) if problems else (request, [])


@guarded
def decode_score_request(raw: bytes | str | None) -> Decoded:
    """Decode and validate one `score-requests` value; a valid one in a single fast pass (`fast_check`)."""
    return _decoded(raw, _fast_score_request, explain_score_request)


def bounded(problems: Sequence[Problem]) -> list[Problem]:
    """At most `MAX_PROBLEMS` problems of at most `MAX_REASON_CHARS` each: a hostile input cannot bloat its report."""
    kept = [(field[:MAX_REASON_CHARS], reason[:MAX_REASON_CHARS]) for field, reason in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        kept.append((MESSAGE, f"... and {len(problems) - MAX_PROBLEMS} more problem(s)"))
    return kept


def describe_problems(problems: Sequence[Problem]) -> str:
    """One readable line: `field: reason; field: reason` (bounded)."""
    return "; ".join(f"{field}: {reason}" for field, reason in bounded(problems))


def iso_now() -> str:
    """The current UTC time as an RFC 3339 date-time with milliseconds (docs/spec.md §2.1)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def dead_letter(
    raw: bytes | None,
    problems: Sequence[Problem],
    *,
    stage: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    max_bytes: int = DEAD_LETTER_MAX_BYTES,
) -> dict[str, Any]:
    """The DeadLetter for a rejected input: original bytes, where it came from and what was wrong.

    It always encodes within `max_bytes`: a larger original is cut, and its full size and SHA-256 digest are kept.
    """
    raw = bytes(raw or b"")
    kept = bounded(problems)
    letter = _dead_letter(
        original_b64="",
        original_bytes=len(raw),
        original_sha256=hashlib.sha256(raw).hexdigest(),
        original_truncated=False,
        topic=topic,
        partition=partition,
        offset=offset,
        error=describe_problems(kept),
        errors=[_dead_letter_error(field, reason) for field, reason in kept],
        stage=stage,
        failed_at=iso_now(),
    )
    room = (max_bytes - len(encode(letter))) // 4 * 3  # base64 makes 4 characters of every 3 bytes
    letter["original_truncated"] = len(raw) > room
    letter["original_b64"] = base64.b64encode(raw[: max(room, 0)]).decode("ascii")
    return letter


def score_response(
    request_id: str,
    strategy: str,
    ranked: Sequence[Mapping[str, Any]],
    *,
    reason: str | None,
    model_version: str | None,
    timings_ms: Mapping[str, float],
) -> dict[str, Any]:
    """A ScoreResponse; `strategy` is `model`, `distance_only` or `error`."""
    return _score_response(
        request_id=request_id,
        strategy=strategy,
        reason=reason,
        model_version=model_version,
        ranked=list(ranked),
        timings_ms=_timings(**timings_ms),
        scored_at=iso_now(),
    )


def error_response(request_id: str, problems: Sequence[Problem]) -> dict[str, Any]:
    """The answer to a malformed request: strategy `error` with the validation message."""
    return score_response(
        request_id, "error", [], reason=describe_problems(problems), model_version=None,
        timings_ms=ZERO_TIMINGS,
    )


def encode(message: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON bytes for a Kafka value (orjson: ~15x the standard library on a 50-candidate response).

    JSON has no NaN or Infinity: written as null. Integers beyond 64 bits take the standard library's path.
    """
    try:
        return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        return json.dumps(_finite(message), separators=(",", ":"), allow_nan=False).encode("utf-8")


def _finite(value: Any) -> Any:
    """`value` with NaN and the infinities as None, as orjson writes them (for the standard library's path)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
