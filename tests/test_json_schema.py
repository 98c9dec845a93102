"""JSON Schema of the contracts: committed files are current, and what the builders write is valid by both."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from schemas.fields import check_object
from schemas.json_schema import JSON_DIR, MESSAGES, message_schema
from schemas.messages import (
    DEAD_LETTER,
    SCORE_RESPONSE,
    dead_letter,
    decode_trip_event,
    error_response,
    ranked_candidate,
    score_response,
)
from tripscore.cli import main


def validator(file_name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(message_schema(file_name))


def test_committed_schemas_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "export", "--check"]) == 0, capsys.readouterr().out


def test_check_fails_on_a_stale_or_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "export", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{name}.schema.json" for name in MESSAGES)
    assert main(["schemas", "export", "--check", "--out", str(tmp_path)]) == 0
    edited = tmp_path / "trip-event.schema.json"
    edited.write_text(edited.read_text().replace('"minLength": 1', '"minLength": 2', 1))
    (tmp_path / "dead-letter.schema.json").unlink()
    capsys.readouterr()
    assert main(["schemas", "export", "--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "trip-event.schema.json" in out and "dead-letter.schema.json" in out and "score-request" not in out


@pytest.mark.parametrize("file_name", list(MESSAGES))
def test_every_schema_is_a_valid_draft_2020_12_document(file_name: str) -> None:
    schema = json.loads((JSON_DIR / f"{file_name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def _responses() -> list[dict]:
    ranked = [ranked_candidate("d2", 1, 0.12, 2.0, 2.6, "present"),
              ranked_candidate("d1", 2, None, 3.0, 3.0, "missing")]
    timings = {"features": 0.4, "model": 0.2, "total": 0.7}
    return [
        score_response("r-1", "model", ranked, reason=None, model_version="lr_v1", timings_ms=timings),
        score_response("r-2", "distance_only", ranked[1:], reason="no_model", model_version=None, timings_ms=timings),
        error_response("", [("candidates", "must have at least 1 item(s)")]),
    ]


def test_built_responses_are_valid_by_the_validator_and_the_schema() -> None:
    for response in _responses():
        assert list(response) == [spec.name for spec in SCORE_RESPONSE]
        assert check_object(SCORE_RESPONSE, response)[1] == []
        assert list(validator("score-response").iter_errors(response)) == []
    broken = {**_responses()[0], "strategy": "guess"}
    del broken["reason"]  # nullable, but present: a missing key is an error
    assert {path for path, _ in check_object(SCORE_RESPONSE, broken)[1]} == {"strategy", "reason"}
    assert {e.json_path for e in validator("score-response").iter_errors(broken)} == {"$.strategy", "$"}


def test_built_dead_letters_are_valid_by_the_validator_and_the_schema() -> None:
    raw = b'{"event_id": ""}'
    for partition, offset in ((2, 41), (None, None)):
        letter = dead_letter(raw, decode_trip_event(raw)[1], stage="stream", topic="trip-events", partition=partition,
                             offset=offset)
        assert list(letter) == [spec.name for spec in DEAD_LETTER]
        assert check_object(DEAD_LETTER, letter)[1] == []
        assert list(validator("dead-letter").iter_errors(letter)) == []
