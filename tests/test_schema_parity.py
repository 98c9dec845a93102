"""Parity of the contract with two JSON Schema implementations, on a generated corpus of raw messages.

At least 10,000 Kafka values, written from the contracts' fields (bounds, types, timestamps, numbers, unicode, raw
tokens, depth), go through tripscore's decoders, through `jsonschema` with the committed schema files, and through
ajv (JavaScript, draft 2020-12, strict mode). Each of the other two must agree with tripscore on every message, except
where a documented rule (`schemas.json_schema.INEXPRESSIBLE`, listed in the README and docs/spec.md §2.3) decides;
then tripscore is always the one that refuses. Every disagreement is explained and counted, and the counts are
printed in pytest's summary. The schemas' patterns are also checked to read alike in RE2 and Python's `re`.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import re2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from properties import examples
from strategies import (
    contract_texts,
    ids,
    json_values,
    mutated,
    offset_decides,
    score_request_values,
    texts,
    trip_event_values,
)

from schemas.fields import Field, Problem, check_message
from schemas.json_schema import FINAL_LINE_FEED, INEXPRESSIBLE, JSON_DIR, MESSAGES
from schemas.messages import (
    DEAD_LETTER,
    FEATURE_STATUSES,
    RANKED_CANDIDATE,
    SCORE_RESPONSE,
    STRATEGIES,
    Decoded,
    dead_letter,
    decode_json,
    decode_score_request,
    decode_trip_event,
    guarded,
    ranked_candidate,
    score_response,
)
from schemas.strict_json import INTEGER_SIZE, KEY_NOT_UNICODE, LONE_SURROGATE, NOT_FINITE, TOO_DEEP
from schemas.timestamps import check_ts

TESTS = Path(__file__).resolve().parent
PER_CONTRACT = examples(2_550)  # generated values per message type: with the fixed examples, over 10,000 in all
RULES = {
    "duplicate candidate": "unique_candidates",
    NOT_FINITE: "finite_numbers", LONE_SURROGATE: "unicode_strings", KEY_NOT_UNICODE: "unicode_strings",
    TOO_DEEP: "max_depth", INTEGER_SIZE: "integer_size",
}
"""The documented rule behind each reason only tripscore gives (`iso_timestamps` is told by the value: `rule_of`)."""
OUT_OF_RANGE = check_ts(-1)[1]
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


def _checked(specs: tuple[Field, ...]) -> Callable[[Any], Decoded]:
    """The decoder of a message tripscore builds but never reads from Kafka: JSON, then `check_message`."""
    def decode(raw: Any) -> Decoded:
        message, problems = decode_json(raw)
        return (None, problems) if problems else check_message(specs, message)

    return guarded(decode)


CONTRACTS: dict[str, tuple[Callable[[Any], Decoded], st.SearchStrategy[bytes]]] = {
    "trip-event": (decode_trip_event, contract_texts(trip_event_values(), ("ts",))),
    "score-request": (decode_score_request, contract_texts(score_request_values(), ("ts",), "candidates")),
    "score-response": (_checked(SCORE_RESPONSE), contract_texts(
        values_of(valid_score_responses(), SCORE_RESPONSE, mutated_ranked()), ("scored_at",), "ranked")),
    "dead-letter": (_checked(DEAD_LETTER), contract_texts(values_of(valid_dead_letters(), DEAD_LETTER),
                                                          ("failed_at",), "errors")),
}

EVENT = '{"event_id": "e", "event_type": "shift_started", "driver_id": "d", "ts": '
REQUEST = ('{"request_id": "r", "ts": 0, "surge_multiplier": 1, "est_duration_min": 9, "rider_rating": 5, '
           '"candidates": [{"driver_id": "d", "pickup_eta_min": ')
TS_EXAMPLES = [  # the forms the issue found accepted by tripscore and refused by the schema, or the other way
    "2026-03-02T08:15:00Z", "2026-03-02 08:15:00Z", "2026-03-02\x0008:15:00Z", "2026-03-02\U0001f60008:15:00Z",
    "2026-03-02T08:00:00:00Z", "2026-03-02T08:15:00+05", "2026-03-02T08:15:00+05:60", "2026-03-02T08:15:00+0530:15",
    "2026-W10-1T08:15:00Z", "2026-03-02T08:00:00.Z", "1969-12-31T23:59:59.9996Z", "5138-11-16T09:46:39.9996Z",
    "1970-01-01T00:30:00+01:00", "5138-11-15T23:00:00-12:00", "2024-02-30T08:00:00Z", "2026-03-02T08:15:00Z\n",
]
UNKNOWN_EXAMPLES = [  # each strict-JSON rule in an unknown field; integers beyond 64 bits in a known one
    '"x": NaN', '"x": [Infinity]', '"x": 1e400', '"x": "\\ud800"', '"\\udfff": 1', '"x": ' + "[" * 64 + "]" * 64,
    '"x": ' + '["\u00e9", ' * 200 + "0" + "]" * 200, '"x": ' + "9" * 5_000, '"x": 9223372036854775808',
    '"pickup_eta_min": 1' + "0" * 308, f'"pickup_eta_min": {int(sys.float_info.max) + 1}',
]
EVENT = '{"event_id": "e", "event_type": "shift_started", "driver_id": "d", "ts": '
REQUEST = ('{"request_id": "r", "ts": 0, "surge_multiplier": 1, "est_duration_min": 9, "rider_rating": 5, '
           '"candidates": [{"driver_id": "d", "pickup_eta_min": ')
EXAMPLES = {  # kept in the corpus whatever the generator draws: every rule at least once, and the cases
    "trip-event": [f"{EVENT}{json.dumps(text)}}}".encode() for text in TS_EXAMPLES]
    + [f"{EVENT}0, {member}}}".encode() for member in UNKNOWN_EXAMPLES],
    "score-request": [f"{REQUEST}{value}}}]}}".encode() for value in [
        '1}, {"driver_id": "d", "pickup_eta_min": 2', "NaN", "1e400", "10000000000000000000",
        '1, "x": "\\udc00"', '1, "x": ' + "{" * 62 + "}" * 62]],
    "score-response": [],
    "dead-letter": [],
}


def at(message: Any, path: str) -> Any:
    """The value at a validator path such as `candidates[3].driver_id`."""
    for name, index in PATH_PART.findall(path):
        message = message[int(index)] if index else message.get(name)
    return message


def rule_of(raw: bytes, problem: Problem) -> str | None:
    """The documented rule behind one of tripscore's problems with `raw`, or None when a schema should see it too."""
    path, reason = problem
    if reason in RULES:
        return RULES[reason]
    if reason == OUT_OF_RANGE:
        value = at(json.loads(raw), path)
        return "iso_timestamps" if isinstance(value, str) and offset_decides(value) else None
    return None


def verdict(ours: Decoded, theirs: bool, raw: bytes, other: str) -> str:
    """`valid`/`invalid` when both agree, else the documented rule that explains why only tripscore refuses."""
    message, problems = ours
    if (message is not None) == theirs:
        return "valid" if theirs else "invalid"
    assert message is None, f"{other} refuses a message tripscore accepts: {raw[:300]!r}"
    rules = {rule_of(raw, problem) for problem in problems}
    assert None not in rules, f"{other} accepts, unexplained: {problems[:5]} in {raw[:300]!r}"
    return "+".join(sorted(rules))


def generated(strategy: st.SearchStrategy[bytes], count: int) -> list[bytes]:
    """`count` values drawn by hypothesis (derandomized where the profile says so), without shrinking."""
    drawn: list[bytes] = []

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(raw: bytes) -> None:
        drawn.append(raw)

    draw()
    return drawn


class ParityReport:
    """Prints the verdict counts in pytest's terminal summary (registered as a plugin by the `report` fixture)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.section("schema parity (tests/test_schema_parity.py)")
        for line in self.lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest) -> ParityReport:
    plugin = ParityReport()
    request.config.pluginmanager.register(plugin, "schema-parity-report")
    return plugin


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[bytes]]:
    """The raw messages of each contract: the fixed examples, then the generated ones."""
    return {name: EXAMPLES[name] + generated(strategy, PER_CONTRACT) for name, (_, strategy) in CONTRACTS.items()}


@pytest.fixture(scope="module")
def ours(corpus: dict[str, list[bytes]]) -> dict[str, list[Decoded]]:
    """tripscore's outcome for every message."""
    return {name: list(map(CONTRACTS[name][0], raws)) for name, raws in corpus.items()}


def jsonschema_accepts(validator: jsonschema.Draft202012Validator, raw: bytes) -> bool:
    """What a Python consumer decides: `json.loads` (lenient: NaN and Infinity read), then the schema."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8 or not JSON (a BOM, too deep, too many digits for Python)
        return False
    return validator.is_valid(value)


def tally(name: str, raws: list[bytes], ours: list[Decoded], theirs: list[bool], other: str) -> Counter[str]:
    counts = Counter(verdict(outcome, accepted, raw, other) for raw, outcome, accepted in zip(
        raws, ours, theirs, strict=True))
    assert counts["valid"] >= len(raws) // 20 and counts["invalid"] >= len(raws) // 5, (name, counts)
    return counts


def _line(other: str, name: str, counts: Counter[str]) -> str:
    rules = ", ".join(f"{rule} {count}" for rule, count in sorted(counts.items()) if rule not in ("valid", "invalid"))
    return (f"{other:10} {name:14} {sum(counts.values()):6} messages: agree {counts['valid']} valid, "
            f"{counts['invalid']} invalid; only tripscore refuses, by rule: {rules or 'none'}")


def test_a_disagreement_no_rule_explains_fails() -> None:
    """The comparison itself: it names the rule behind a disagreement, and fails on any other."""
    def raw(ts: object) -> bytes:
        return f'{{"event_id": "e", "event_type": "shift_started", "ts": {json.dumps(ts)}, "driver_id": "d"}}'.encode()

    near_the_start = raw("1970-01-01T00:30:00+01:00")
    assert verdict(decode_trip_event(near_the_start), True, near_the_start, "x") == "iso_timestamps"
    assert verdict(decode_trip_event(raw(0)), True, raw(0), "x") == "valid"
    with pytest.raises(AssertionError, match="unexplained"):  # a schema that lost the range of epoch ms
        verdict(decode_trip_event(raw(-1)), True, raw(-1), "x")
    with pytest.raises(AssertionError, match="refuses a message tripscore accepts"):
        verdict(decode_trip_event(raw(0)), False, raw(0), "x")


def test_the_corpus_holds_at_least_10000_messages(corpus: dict[str, list[bytes]]) -> None:
    assert sum(map(len, corpus.values())) >= 10_000


def test_the_documented_rules_are_in_the_readme_and_the_spec() -> None:
    root = TESTS.parent
    documents = (root / "README.md").read_text(), (root / "docs" / "spec.md").read_text()
    assert set(RULES.values()) | {"iso_timestamps"} == set(INEXPRESSIBLE)
    assert all(f"`{rule}`" in text for rule in INEXPRESSIBLE for text in documents)


@pytest.mark.hypothesis  # drawn by hypothesis, so `make fuzz` runs it with random seeds
def test_jsonschema_agrees_but_for_the_documented_rules(corpus: dict[str, list[bytes]],
                                                        ours: dict[str, list[Decoded]], report: ParityReport) -> None:
    everything: Counter[str] = Counter()
    for name, raws in corpus.items():
        validator = jsonschema.Draft202012Validator(json.loads((JSON_DIR / f"{name}.schema.json").read_text()))
        counts = tally(name, raws, ours[name], [jsonschema_accepts(validator, raw) for raw in raws], "jsonschema")
        report.lines.append(_line("jsonschema", name, counts))
        everything += counts
    assert set(everything) - {"valid", "invalid"} >= set(INEXPRESSIBLE)  # each rule met (the examples hold all)


def _node_and_ajv() -> str | None:
    """Why the ajv part cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed: the parity with ajv (JavaScript) is not checked here"
    if not (TESTS / "node_modules" / "ajv").is_dir():
        return "ajv is not installed: `npm ci --prefix tests` (make test runs it when npm is present)"
    return None


def ajv_accepts(corpus: dict[str, list[bytes]]) -> dict[str, list[bool]]:
    """ajv's verdict on every message, from one node process (tests/ajv_validate.mjs)."""
    lines = "".join(json.dumps({"schema": name, "b64": base64.b64encode(raw).decode()}) + "\n"
                    for name, raws in corpus.items() for raw in raws)
    done = subprocess.run(["node", str(TESTS / "ajv_validate.mjs"), str(JSON_DIR)], input=lines.encode(),
                          capture_output=True, check=False, cwd=TESTS, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    verdicts = iter(json.loads(line)[0] for line in done.stdout.decode().splitlines())
    return {name: [next(verdicts) == "valid" for _ in raws] for name, raws in corpus.items()}


@pytest.mark.hypothesis  # drawn by hypothesis, so `make fuzz` runs it with random seeds
@pytest.mark.skipif(_node_and_ajv() is not None, reason=_node_and_ajv() or "")
def test_ajv_agrees_but_for_the_documented_rules(corpus: dict[str, list[bytes]], ours: dict[str, list[Decoded]],
                                                 report: ParityReport) -> None:
    accepted = ajv_accepts(corpus)
    everything: Counter[str] = Counter()
    for name, raws in corpus.items():
        counts = tally(name, raws, ours[name], accepted[name], "ajv")
        report.lines.append(_line("ajv", name, counts))
        everything += counts
    assert set(everything) - {"valid", "invalid"} >= set(INEXPRESSIBLE)  # JSON.parse reads 1e400 as Infinity


def schema_patterns() -> list[str]:
    """Every `pattern` in the committed schema files."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update([node["pattern"]] if isinstance(node.get("pattern"), str) else [])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    for name in MESSAGES:
        walk(json.loads((JSON_DIR / f"{name}.schema.json").read_text()))
    return sorted(found)


NOT_PORTABLE = re.compile(r"\\[dDwWsSbB1-9]|\(\?[^:]")  # classes that differ by engine, backreferences, lookaround


def _outside_classes(pattern: str) -> str:
    """`pattern` without its `[...]` character classes and escaped characters (to find a bare `.`)."""
    return re.sub(r"\\.|\[(?:\\.|[^\]\\])*\]", "", pattern)


def test_every_pattern_is_in_the_common_subset_and_compiles_under_re2() -> None:
    patterns = schema_patterns()
    assert FINAL_LINE_FEED in patterns and len(patterns) >= 6
    for pattern in patterns:
        assert not NOT_PORTABLE.search(pattern), pattern
        assert "." not in _outside_classes(pattern), f"a bare `.` differs by engine: {pattern}"
        re2.compile(pattern)
        re.compile(pattern)


def _strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set(value) | set().union(*map(_strings, value.values()))
    if isinstance(value, list):
        return set().union(*map(_strings, value))
    return set()


@pytest.mark.hypothesis  # drawn by hypothesis, so `make fuzz` runs it with random seeds
def test_re2_and_python_match_every_pattern_alike_on_the_corpus(corpus: dict[str, list[bytes]]) -> None:
    """Every string of the corpus against every pattern. The one difference allowed is Python's `$` before a final
    line feed, which the schemas' `not: {pattern: "\\n$"}` beside each anchored pattern refuses in every engine."""
    strings: set[str] = set()
    for raw in (raw for raws in corpus.values() for raw in raws):
        message, problems = decode_json(raw)
        if not problems:
            strings |= _strings(message)
    # a lone surrogate is not Unicode: RE2 cannot take it, and the strict rules refuse it before any pattern
    strings = {text for text in strings if not any(0xD800 <= ord(c) <= 0xDFFF for c in text)}
    strings |= {f"{text}\n" for text in sorted(strings)[:2000]}
    final_line_feed = re.compile(FINAL_LINE_FEED)
    compared = 0
    for pattern in schema_patterns():
        python, google = re.compile(pattern), re2.compile(pattern)
        for text in strings:
            if bool(python.search(text)) != bool(google.search(text)):
                assert pattern.endswith("$") and final_line_feed.search(text) and re2.search(FINAL_LINE_FEED, text), (
                    pattern, text)
            compared += 1
    assert compared > 10_000
