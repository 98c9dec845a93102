"""Message contracts (docs/spec.md §2): valid messages round-trip, every invalid one names its field and reason."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from schemas.messages import (
    SCORE_REQUEST,
    TRIP_EVENT,
    dead_letter,
    decode_score_request,
    decode_trip_event,
    encode,
    error_response,
)
from schemas.timestamps import check_ts

OFFER = {
    "event_id": "e-1",
    "event_type": "trip_offered",
    "ts": "2026-03-02T08:15:00+01:00",
    "driver_id": "drv_00042",
    "trip_id": "t-9",
    "pickup_eta_min": 4.5,
    "surge_multiplier": 1.2,
    "est_duration_min": 18,
    "rider_rating": 4.8,
    "schema_version": 1,
}
REQUEST = {
    "request_id": "r-1",
    "ts": 1772435700000,
    "surge_multiplier": 1.0,
    "est_duration_min": 12.5,
    "rider_rating": 4.2,
    "candidates": [{"driver_id": "d1", "pickup_eta_min": 3.0}, {"driver_id": "d2", "pickup_eta_min": 0}],
}


def with_(base: dict, **changes: object) -> bytes:
    """`base` with fields replaced (a value of ... removes the field), as JSON bytes."""
    message = {k: v for k, v in {**base, **changes}.items() if v is not ...}
    return json.dumps(message).encode()


def test_valid_trip_event_round_trips() -> None:
    event, problems = decode_trip_event(encode(OFFER))
    assert problems == []
    assert event["ts_ms"] == 1772435700000
    assert event["driver_id"] == "drv_00042" and event["pickup_eta_min"] == 4.5
    again, problems = decode_trip_event(encode({**OFFER, "ts": event["ts_ms"]}))
    assert problems == [] and again == event


@pytest.mark.parametrize(
    "event_type, extra",
    [
        ("shift_started", {}),
        ("shift_ended", {}),
        ("offer_accepted", {"trip_id": "t"}),
        ("offer_declined", {"trip_id": "t"}),
        ("trip_completed", {"trip_id": "t"}),
        ("trip_rated", {"trip_id": "t", "rating": 5}),
    ],
)
def test_every_event_type_with_its_required_fields_is_valid(event_type: str, extra: dict) -> None:
    message = {"event_id": "x", "event_type": event_type, "ts": 0, "driver_id": "d", **extra}
    event, problems = decode_trip_event(json.dumps(message))
    assert problems == [] and event["event_type"] == event_type


def test_unknown_fields_are_ignored() -> None:
    event, problems = decode_trip_event(with_(OFFER, colour="red"))
    assert problems == [] and "colour" not in event


INVALID_EVENTS = [
    (with_(OFFER, event_id=...), "event_id", "is required"),
    (with_(OFFER, event_id=""), "event_id", "at least 1"),
    (with_(OFFER, event_id="x" * 65), "event_id", "at most 64"),
    (with_(OFFER, event_id=7), "event_id", "expected a string"),
    (with_(OFFER, event_type="trip_teleported"), "event_type", "unknown value"),
    (with_(OFFER, event_type=...), "event_type", "is required"),
    # unhashable types with a type-dependent field missing: reported, not a TypeError
    (with_(OFFER, event_type=["trip_offered"], trip_id=...), "event_type", "expected a string"),
    (with_(OFFER, event_type={"a": 1}, rating=...), "event_type", "expected a string"),
    (with_(OFFER, ts="2026-03-02T08:15:00"), "ts", "RFC 3339 date-time"),
    (with_(OFFER, ts="yesterday"), "ts", "RFC 3339 date-time"),
    (with_(OFFER, ts="2026-02-29T08:15:00Z"), "ts", "no such day"),
    (with_(OFFER, ts=-5), "ts", "from 1970-01-01"),
    (with_(OFFER, ts=True), "ts", "epoch milliseconds"),
    (with_(OFFER, driver_id="d" * 65), "driver_id", "at most 64"),
    (with_(OFFER, driver_id="bad id!"), "driver_id", "characters outside"),
    (with_(OFFER, driver_id=...), "driver_id", "is required"),
    (with_(OFFER, trip_id=...), "trip_id", "is required"),
    (with_(OFFER, pickup_eta_min=-1), "pickup_eta_min", ">= 0"),
    (with_(OFFER, pickup_eta_min="4"), "pickup_eta_min", "expected a number"),
    (with_(OFFER, pickup_eta_min=...), "pickup_eta_min", "is required"),
    (with_(OFFER, surge_multiplier=0.9), "surge_multiplier", ">= 1"),
    (with_(OFFER, est_duration_min=0), "est_duration_min", "> 0"),
    (with_(OFFER, rider_rating=5.5), "rider_rating", "<= 5"),
    (with_(OFFER, rider_rating=False), "rider_rating", "expected a number"),
    (with_(OFFER, schema_version=2), "schema_version", "must be 1"),
    (with_(OFFER, event_type="trip_rated", rating=...), "rating", "is required"),
    (with_(OFFER, event_type="trip_rated", rating=0), "rating", ">= 1"),
    (b'{"event_id": "e", "pickup_eta_min": NaN}', "pickup_eta_min", "finite"),
    (b'{"event_id": "e", "surge_multiplier": Infinity}', "surge_multiplier", "finite"),
    (b'{"event_id": "e", "rider_rating": 1e400}', "rider_rating", "finite"),  # beyond a double: an infinity
    (b'{"event_id": "e", "rider_rating": 1' + b"0" * 400 + b"}", "rider_rating", "beyond 64 bits"),
    (with_(OFFER, schema_version=1.5), "schema_version", "expected an integer"),
    (b"not json at all", "<message>", "not valid JSON"),
    (b'{"event_id": "e",', "<message>", "not valid JSON"),
    (b"\xff\xfe{}", "<message>", "not valid UTF-8"),
    (b"", "<message>", "empty message"),
    (None, "<message>", "empty message"),
    (b"[1, 2, 3]", "<message>", "expected a JSON object"),
]


@pytest.mark.parametrize("raw, field, reason", INVALID_EVENTS)
def test_invalid_trip_event_names_field_and_reason(raw: bytes | None, field: str, reason: str) -> None:
    event, problems = decode_trip_event(raw)
    assert event is None
    assert any(f == field and reason in r for f, r in problems), problems


def test_every_problem_is_reported_not_just_the_first() -> None:
    _, problems = decode_trip_event(with_(OFFER, event_id="", surge_multiplier=0.1, rider_rating=9))
    assert {field for field, _ in problems} == {"event_id", "surge_multiplier", "rider_rating"}


def test_valid_score_request_round_trips() -> None:
    request, problems = decode_score_request(encode(REQUEST))
    assert problems == []
    assert request["ts_ms"] == 1772435700000
    assert [c["driver_id"] for c in request["candidates"]] == ["d1", "d2"]


INVALID_REQUESTS = [
    (with_(REQUEST, candidates=[]), "candidates", "at least 1"),
    (with_(REQUEST, candidates=[{"driver_id": f"d{i}", "pickup_eta_min": 1} for i in range(201)]),
     "candidates", "at most 200"),
    (with_(REQUEST, candidates=[{"driver_id": "d1"}]), "candidates[0].pickup_eta_min", "is required"),
    (with_(REQUEST, candidates=[{"driver_id": "d1", "pickup_eta_min": 1}, {"driver_id": "d1", "pickup_eta_min": 2}]),
     "candidates[1].driver_id", "duplicate"),
    (with_(REQUEST, candidates="d1,d2"), "candidates", "expected a list"),
    (with_(REQUEST, request_id=...), "request_id", "is required"),
    (with_(REQUEST, surge_multiplier=...), "surge_multiplier", "is required"),
]


@pytest.mark.parametrize("raw, field, reason", INVALID_REQUESTS)
def test_invalid_score_request_names_field_and_reason(raw: bytes, field: str, reason: str) -> None:
    request, problems = decode_score_request(raw)
    assert request is None
    assert any(f == field and reason in r for f, r in problems), problems


def test_dead_letter_keeps_original_bytes_and_every_problem() -> None:
    raw = b'{"event_id": ""}'
    _, problems = decode_trip_event(raw)
    letter = dead_letter(raw, problems, stage="stream", topic="trip-events", partition=2, offset=41)
    assert base64.b64decode(letter["original_b64"]) == raw
    assert letter["partition"] == 2 and letter["offset"] == 41 and letter["stage"] == "stream"
    assert "event_id: must have at least 1" in letter["error"]
    assert len(letter["errors"]) == len(problems)
    json.loads(encode(letter))


def test_encode_is_compact_json_that_round_trips() -> None:
    message = {"ranked": [{"decline_risk": 2.514786120122914e-05, "rank": 1, "driver_id": "drv_1"}], "reason": None}
    for extra in ({"n": np.float64(0.25)}, {"big": 10**30}):  # a numpy scalar; an int beyond 64 bits (fallback)
        raw = encode({**message, **extra})
        assert b" " not in raw
        assert json.loads(raw) == {**message, **{k: float(v) if isinstance(v, np.floating) else v
                                                 for k, v in extra.items()}}
    assert json.loads(encode({"risk": float("nan")})) == {"risk": None}  # JSON has no NaN


def test_error_response_carries_the_validation_message() -> None:
    _, problems = decode_score_request(with_(REQUEST, rider_rating=7))
    response = error_response("r-1", problems)
    assert response["strategy"] == "error" and response["ranked"] == []
    assert "rider_rating: must be <= 5" in response["reason"]


def test_timestamps_accept_z_and_offsets_identically() -> None:
    assert check_ts("2026-03-02T07:15:00Z") == check_ts("2026-03-02T08:15:00+01:00") == (1772435700000, None)


def test_spark_schema_equals_contract_field_by_field() -> None:
    from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType

    from schemas.spark_schema import TRIP_EVENT_SCHEMA, struct_type

    expected_types = {"str": StringType(), "enum": StringType(), "float": DoubleType(),
                      "int": IntegerType(), "ts": LongType()}
    assert [f.name for f in TRIP_EVENT_SCHEMA.fields] == [s.out_name for s in TRIP_EVENT]
    for spec, column in zip(TRIP_EVENT, TRIP_EVENT_SCHEMA.fields, strict=True):
        assert column.dataType == expected_types[spec.kind], spec.name
        assert column.nullable == (spec.required is not True), spec.name
    candidates = struct_type(SCORE_REQUEST)["candidates"].dataType.elementType
    assert [f.name for f in candidates.fields] == ["driver_id", "pickup_eta_min"]


def test_feature_registry_rejects_long_bin_names() -> None:
    from schemas.features import BINS, BinSpec

    assert all(len(spec.name.encode()) <= 15 for spec in BINS)
    with pytest.raises(ValueError, match="1-15 bytes"):
        BinSpec("ds_much_too_long_name", "driver-stats", "int", "x")
    with pytest.raises(ValueError, match="group prefix"):
        BinSpec("da_thing", "driver-stats", "int", "x")
