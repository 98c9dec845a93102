"""Parity: on generated valid and invalid messages, `jsonschema` with our JSON Schema and our validator agree.

The only disagreements allowed are the rules JSON Schema cannot state (`schemas.json_schema.INEXPRESSIBLE`, listed
in the README); each one is classified, and anything else fails with the message and both verdicts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import ids, json_values, mutated, offset_decides, score_request_values, texts, trip_event_values

from schemas.fields import Field, Problem, check_message
from schemas.json_schema import INEXPRESSIBLE, message_schema
from schemas.messages import (
    DEAD_LETTER,
    FEATURE_STATUSES,
    RANKED_CANDIDATE,
    SCORE_REQUEST,
    SCORE_RESPONSE,
    STRATEGIES,
    TRIP_EVENT,
    dead_letter,
    ranked_candidate,
    score_response,
    validate_score_request,
    validate_trip_event,
)
from schemas.strict_json import INTEGER_SIZE, KEY_NOT_UNICODE, LONE_SURROGATE, NOT_FINITE, TOO_DEEP

EXAMPLES = 1000  # per message type
UNIQUE, ISO, FINITE, UNICODE = "unique_candidates", "iso_timestamps", "finite_numbers", "unicode_strings"
DEPTH, INTEGER = "max_depth", "integer_size"
PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@st.composite
def valid_score_responses(draw: st.DrawFn) -> dict[str, Any]:
    """A ScoreResponse as the scorer builds it."""
    drivers = draw(st.lists(ids, max_size=draw(st.sampled_from([3, 50])), unique=True))
    ranked = []
    for rank, driver in enumerate(drivers, start=1):
        risk = draw(st.one_of(st.none(), st.floats(0, 1)))
        eta = draw(st.floats(0, 1e4))
        ranked.append(ranked_candidate(driver, rank, risk, eta, eta + 5 * (risk or 0), draw(st.sampled_from(
            FEATURE_STATUSES))))
    timings = {name: draw(st.floats(0, 1e4)) for name in ("features", "model", "total")}
    return score_response(draw(texts), draw(st.sampled_from(STRATEGIES)), ranked,
                          reason=draw(st.one_of(st.none(), texts)), model_version=draw(st.one_of(st.none(), texts)),
                          timings_ms=timings)


@st.composite
def mutated_ranked(draw: st.DrawFn) -> dict[str, Any]:
    """A response with one ranked candidate broken."""
    response = draw(valid_score_responses().filter(lambda r: r["ranked"]))
    ranked = list(response["ranked"])
    position = draw(st.integers(0, len(ranked) - 1))
    ranked[position] = draw(mutated(st.just(ranked[position]), [spec.name for spec in RANKED_CANDIDATE]))
    return {**response, "ranked": ranked}


@st.composite
def valid_dead_letters(draw: st.DrawFn) -> dict[str, Any]:
    """A DeadLetter as the stages build it."""
    problems = draw(st.lists(st.tuples(texts, texts), min_size=1, max_size=5))
    partition, offset = draw(st.one_of(st.none(), st.integers(0, 1000))), draw(st.one_of(st.none(), st.integers(0)))
    return dead_letter(draw(st.binary(max_size=200)), problems, stage=draw(st.sampled_from(["stream", "score"])),
                       topic=draw(ids), partition=partition, offset=offset, max_bytes=draw(st.sampled_from(
                           [900_000, 600])))


def values_of(valid: st.SearchStrategy[dict[str, Any]], specs: tuple[Field, ...],
              *more: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid messages, messages with fields replaced or removed, other breakages, any JSON value."""
    return st.one_of(valid, mutated(valid, [spec.name for spec in specs]), *more, json_values)


def at(message: Any, path: str) -> Any:
    """The value at a validator path such as `candidates[3].driver_id`."""
    for name, index in PATH_PART.findall(path):
        message = message[int(index)] if index else message.get(name)
    return message


STRICT_RULES = {NOT_FINITE: FINITE, LONE_SURROGATE: UNICODE, KEY_NOT_UNICODE: UNICODE, TOO_DEEP: DEPTH,
                INTEGER_SIZE: INTEGER}


def explain_problem(message: Any, specs: tuple[Field, ...], problem: Problem) -> str | None:
    """The inexpressible rule behind one of our problems, or None when JSON Schema should have caught it too."""
    path, reason = problem
    if reason == "duplicate candidate":
        return UNIQUE
    if reason in STRICT_RULES:
        return STRICT_RULES[reason]
    value = at(message, path)
    if path in {spec.name for spec in specs if spec.kind == "ts"} and isinstance(value, str) and offset_decides(value):
        return ISO
    return None


def compare(validate: Callable[[Any], tuple[Any, list[Problem]]], schema: jsonschema.Draft202012Validator,
            specs: tuple[Field, ...], message: Any) -> str:
    """`valid`, `invalid` (both agree), or the inexpressible rule that explains a disagreement; AssertionError else."""
    normalised, problems = validate(message)
    ours_valid = normalised is not None
    errors = list(schema.iter_errors(message))
    if ours_valid == (not errors):
        return "valid" if ours_valid else "invalid"
    assert not ours_valid, f"the schema refuses a valid message: {[error.message[:200] for error in errors]}"
    rules = {explain_problem(message, specs, problem) for problem in problems}
    assert None not in rules and len(rules) == 1, f"unexplained disagreement: {problems}"
    return rules.pop()


CONTRACTS = {
    "trip-event": (TRIP_EVENT, validate_trip_event, trip_event_values()),
    "score-request": (SCORE_REQUEST, validate_score_request, score_request_values()),
    "score-response": (SCORE_RESPONSE, lambda message: check_message(SCORE_RESPONSE, message),
                       values_of(valid_score_responses(), SCORE_RESPONSE, mutated_ranked())),
    "dead-letter": (DEAD_LETTER, lambda message: check_message(DEAD_LETTER, message),
                    values_of(valid_dead_letters(), DEAD_LETTER)),
}


def test_the_allowed_disagreements_are_the_inexpressible_rules_and_in_the_readme() -> None:
    assert {UNIQUE, ISO, FINITE, UNICODE, DEPTH, INTEGER} == set(INEXPRESSIBLE)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert all(f"`{rule}`" in readme for rule in INEXPRESSIBLE)


def test_each_allowed_disagreement_is_recognised_and_nothing_else_is() -> None:
    event = {"event_id": "e", "event_type": "shift_started", "ts": 0, "driver_id": "d"}
    request = {"request_id": "r", "ts": 0, "surge_multiplier": 1.0, "est_duration_min": 9.0, "rider_rating": 5,
               "candidates": [{"driver_id": "d", "pickup_eta_min": 1.0}]}
    specs, validate, _ = CONTRACTS["trip-event"]
    schema = jsonschema.Draft202012Validator(message_schema("trip-event"))
    assert compare(validate, schema, specs, event) == "valid"
    assert compare(validate, schema, specs, {**event, "driver_id": "d d"}) == "invalid"
    assert compare(validate, schema, specs, {**event, "event_id": "e\ud800"}) == UNICODE
    assert compare(validate, schema, specs, {**event, "ts": "1970-01-01T00:30:00+01:00"}) == ISO  # before 1970
    assert compare(validate, schema, specs, {**event, "ts": "1969-12-31T23:30:00-01:00"}) == "valid"  # 1970 in UTC
    assert compare(validate, schema, specs, {**event, "ts": "2024-02-30T08:00:00Z"}) == "invalid"
    assert compare(validate, schema, specs, {**event, "event_type": "trip_rated", "trip_id": "t",
                                             "rating": float("nan")}) == FINITE
    specs, validate, _ = CONTRACTS["score-request"]
    schema = jsonschema.Draft202012Validator(message_schema("score-request"))
    assert compare(validate, schema, specs, {**request, "candidates": request["candidates"] * 2}) == UNIQUE
    with pytest.raises(AssertionError, match="unexplained disagreement"):  # a rule the schema lost
        compare(validate, jsonschema.Draft202012Validator({"type": "object"}), specs, {**request, "ts": -1})


def run_parity(file_name: str) -> Counter[str]:
    """Compare both validators on `EXAMPLES` generated messages; the tally of verdicts."""
    specs, validate, values = CONTRACTS[file_name]
    schema = jsonschema.Draft202012Validator(message_schema(file_name))
    tally: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(values)
    def check(message: Any) -> None:
        tally[compare(validate, schema, specs, message)] += 1

    check()
    return tally


def test_trip_event_parity() -> None:
    tally = run_parity("trip-event")
    print("trip-event parity:", dict(tally))
    assert sum(tally.values()) >= EXAMPLES * 0.9 and tally["valid"] > 100 and tally["invalid"] > 100, tally


def test_score_request_parity() -> None:
    tally = run_parity("score-request")
    print("score-request parity:", dict(tally))
    assert sum(tally.values()) >= EXAMPLES * 0.9 and tally["valid"] > 100 and tally["invalid"] > 100, tally
    assert tally[UNIQUE] > 0, "duplicate candidates were generated and explained"


def test_score_response_parity() -> None:
    tally = run_parity("score-response")
    print("score-response parity:", dict(tally))
    assert sum(tally.values()) >= EXAMPLES * 0.9 and tally["valid"] > 100 and tally["invalid"] > 100, tally


def test_dead_letter_parity() -> None:
    tally = run_parity("dead-letter")
    print("dead-letter parity:", dict(tally))
    assert sum(tally.values()) >= EXAMPLES * 0.9 and tally["valid"] > 100 and tally["invalid"] > 100, tally
