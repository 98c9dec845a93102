"""Aerospike backend pieces that need no server: the newer-wins filter, client config, error codes, batch results."""

from __future__ import annotations

import random

import pytest
from aerospike import exception as aerospike_errors
from aerospike_helpers.batch.records import BatchRecords, Read

from featurestore.aerospike import (
    _mapped,
    _newer_than_stored_expr,
    check_batch,
    client_config,
    error_for,
    newer_than_stored,
    parse_hosts,
)
from featurestore.base import BadInput, StoreError, StoreTimeout, StoreUnavailable
from runtime.config import load_settings


def test_filled_template_equals_a_fresh_compile() -> None:
    rng = random.Random(3)
    for _ in range(200):
        event_ms, n_events = rng.randrange(0, 2**62), rng.randrange(0, 2**40)
        assert newer_than_stored(event_ms, n_events) == _newer_than_stored_expr(event_ms, n_events)


def test_client_config_from_settings() -> None:
    settings = load_settings(
        aerospike_hosts="a:3100, b", aerospike_user="u", aerospike_password="p", aerospike_tls_name="tls1",
        aerospike_tls_cafile="/ca.pem", aerospike_timeout_ms=30, aerospike_retries=1,
    )
    config = client_config(settings)
    assert config["hosts"] == [("a", 3100, "tls1"), ("b", 3000, "tls1")]
    assert (config["user"], config["password"]) == ("u", "p")
    assert config["tls"] == {"enable": True, "cafile": "/ca.pem"}
    assert config["policies"]["batch"] == {"total_timeout": 30, "max_retries": 1}
    plain = client_config(load_settings(aerospike_hosts="127.0.0.1:3000"))
    assert "tls" not in plain and "user" not in plain and plain["hosts"] == [("127.0.0.1", 3000)]
    with pytest.raises(ValueError, match="host"):
        parse_hosts("a:port")


@pytest.mark.parametrize(
    ("code", "kind"),
    [(9, StoreTimeout), (212, StoreTimeout), (-10, StoreUnavailable), (-15, StoreUnavailable),
     (-14, StoreUnavailable), (11, StoreUnavailable), (18, StoreUnavailable), (13, BadInput), (21, BadInput),
     (22, StoreError), (20, StoreError), (65, StoreError)],
)
def test_result_codes_map_to_store_errors(code: int, kind: type[StoreError]) -> None:
    error = error_for(code, "x")
    assert type(error) is kind


def batch(result: int, entry_results: list[int]) -> BatchRecords:
    """A batch as the client leaves it: its own result and one per entry."""
    records = BatchRecords([Read(("features", "s", f"k{i}"), None) for i in range(len(entry_results))])
    records.result = result
    for record, code in zip(records.batch_records, entry_results, strict=True):
        record.result = code
    return records


@pytest.mark.parametrize(
    ("result", "entries", "kind"),
    [
        (1, [], StoreUnavailable),  # a read once the client has lost every node: no entries at all
        (1, [0, 0], StoreUnavailable),  # a write then: entries left at 0 (OK) must not count as written
        (-10, [-15, -15], StoreUnavailable),  # connection lost: entries unanswered
        (9, [-15], StoreTimeout),
        (-16, [0, 2, 13], BadInput),  # some entries failed: the first failure decides
    ],
)
def test_failed_batches_raise_store_errors(result: int, entries: list[int], kind: type[StoreError]) -> None:
    with pytest.raises(kind) as raised:
        check_batch(batch(result, entries), (0, 2), "batch read")
    assert type(raised.value) is kind


def test_a_batch_of_allowed_results_passes() -> None:
    check_batch(batch(0, [0, 2]), (0, 2), "batch read")
    check_batch(batch(-16, [0, 27]), (0, 27), "batch write")


def test_a_ttl_write_refused_for_want_of_nsup_period_says_what_to_change() -> None:
    """A namespace without `nsup-period` refuses records with a TTL: code 22, on each entry of a batch write or as
    the client's ForbiddenError, and the server says nothing more."""
    with pytest.raises(StoreError) as refused:
        check_batch(batch(-16, [22, 22]), (0, 27), "batch write (0 written before this batch)")
    for error in (refused.value, _mapped(aerospike_errors.ForbiddenError(), "batch write")):
        assert type(error) is StoreError, "a setting to change, not an outage to wait out"
        assert "(code 22)" in str(error) and "`nsup-period`" in str(error) and "TRIPSCORE_STORE_TTL_S=0" in str(error)
    assert "nsup-period" not in str(error_for(13, "x")), "other codes keep their own message"
