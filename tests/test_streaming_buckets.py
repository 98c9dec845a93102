"""Stage 2's state buckets (no Spark): drivers sharing a bucket are updated as if each were alone, and a checkpoint
keeps the bucket count it was built with (idle drivers: `test_streaming_eviction.py`)."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runtime.config import Settings
from streaming.checkpoint import DEFAULT_BUCKETS, LAYOUT_FILE, CheckpointMismatch, state_buckets
from streaming.parse import INVALID_KEY, pack, unpack
from streaming.stateful import (
    DUPLICATE,
    INVALID,
    LATE,
    RECORD,
    bucket_update,
    driver_update,
    dump_bucket,
    load_bucket,
)

MIN = 60_000
DAY = 24 * 60 * MIN  # the default idle time: no driver of these batches is dropped
DRIVERS = ["d0", "d1", "d2", INVALID_KEY]
POISONED = "d2"  # its events carry a rating the fold cannot add: its update raises
TYPES = ["trip_offered", "offer_accepted", "offer_declined", "trip_completed", "trip_rated", "shift_started"]


@st.composite
def batches(draw: st.DrawFn) -> list[list[tuple[str, tuple]]]:
    """Two micro-batches of (driver id, packed record), event times out of order, ids reused (duplicates)."""
    out, offset = [], 0
    for _ in range(2):
        batch = []
        for driver_id in draw(st.lists(st.sampled_from(DRIVERS), max_size=12)):
            event_type = draw(st.sampled_from(TYPES))
            rating = ("bad" if driver_id == POISONED else draw(st.sampled_from([None, 4.5]))) \
                if event_type == "trip_rated" else None
            fold = None if driver_id == INVALID_KEY else (
                draw(st.integers(0, 40)) * MIN, f"e{draw(st.integers(0, 6))}", event_type, rating)
            batch.append((driver_id, (fold, 0, offset, driver_id.encode(), b"{}")))
            offset += 1
        out.append(batch)
    return out


def cells(batch: list[tuple[str, tuple]]) -> list[bytes]:
    """The batch as stage 1 could deliver it: split over two cells (two Arrow batches), records in order."""
    halves = (batch[: len(batch) // 2], batch[len(batch) // 2:])
    out = []
    for half in halves:
        by_driver: dict[str, list[tuple]] = {}
        for driver_id, record in half:
            by_driver.setdefault(driver_id, []).append(record)
        out.append(pack(by_driver))
    return out


def outcomes(rows: list[tuple[str, bytes | None, bytes]]) -> int:
    """How many input records the output rows account for (accepted, dead-lettered or counted as duplicates)."""
    total = 0
    for kind, _, payload in rows:
        if kind == RECORD:
            total += len(json.loads(payload)[1])
        elif kind in (INVALID, LATE):
            total += 1
        elif kind == DUPLICATE:
            total += int(payload)
    return total


def comparable(row: tuple[str, bytes | None, bytes]) -> tuple[str, bytes | None, bytes]:
    """The row without its dead letter's `failed_at` (the clock)."""
    kind, key, payload = row
    if kind in (INVALID, LATE):
        payload = json.dumps({**json.loads(payload), "failed_at": None}, sort_keys=True).encode()
    return kind, key, payload


@pytest.fixture(scope="module")
def job_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("buckets")
    return Settings(home=home, sqlite_path=home / "features.db")  # an empty store: every first sight seeds nothing


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches())
@example([[("d0", ((MIN, "e1", "trip_completed", None), 0, 0, b"d0", b"{}")),
           (POISONED, ((MIN, "e1", "trip_rated", "bad"), 0, 1, b"d2", b"{}"))],
          [(POISONED, ((2 * MIN, "e2", "trip_completed", None), 0, 2, b"d2", b"{}"))]])
def test_drivers_sharing_a_bucket_are_updated_as_if_alone(job_settings: Settings, two: list) -> None:
    bucket_state, alone_states = None, {}
    for number, batch in enumerate(two):
        watermark_ms = number * 20 * MIN
        state, rows = bucket_update(job_settings, "t", cells(batch), bucket_state, watermark_ms, DAY)
        assert outcomes(rows) == len(batch)  # exactly one outcome per record
        bucket_state = state or bucket_state
        by_driver: dict[str, list] = {}
        for cell in cells(batch):
            for driver_id, events in unpack(cell).items():
                by_driver.setdefault(driver_id, []).extend(events)
        alone_rows = []
        for driver_id, events in by_driver.items():
            saved = alone_states[driver_id][1] if driver_id in alone_states else None
            alone, out = driver_update(job_settings, "t", driver_id, events, saved, watermark_ms, None)  # empty store
            alone_rows += out
            if alone is not None:
                alone_states[driver_id] = alone
        assert sorted(map(comparable, rows)) == sorted(map(comparable, alone_rows))
        assert ({} if bucket_state is None else load_bucket(bucket_state)) == alone_states


@given(st.dictionaries(st.text(max_size=12), st.tuples(st.integers(-1, 2**62), st.binary(max_size=300)), max_size=20))
def test_a_bucket_reads_back_as_saved_in_ascii(states: dict[str, tuple[int, bytes]]) -> None:
    saved = dump_bucket(states)
    assert saved.isascii()
    assert load_bucket(saved) == states


def test_a_bucket_saved_in_the_zlib_form_still_loads() -> None:
    states = {"d0": b"\x80\x05state", "d1": b""}
    before_zstd = base64.b64encode(zlib.compress(pickle.dumps(states, protocol=5), 1)).decode("ascii")
    assert load_bucket(before_zstd) == states


def test_a_new_checkpoint_records_its_buckets_and_resumes_with_them(tmp_path: Path) -> None:
    assert state_buckets(tmp_path / "cp", 128) == 128
    assert json.loads((tmp_path / "cp" / LAYOUT_FILE).read_text()) == {"state_buckets": 128}
    assert state_buckets(tmp_path / "cp", 128) == 128
    assert state_buckets(tmp_path / "cp", None) == 128  # none asked: the checkpoint's, not the default


def test_a_new_checkpoint_without_a_count_gets_the_default(tmp_path: Path) -> None:
    assert state_buckets(tmp_path, None) == DEFAULT_BUCKETS
    assert state_buckets(tmp_path, DEFAULT_BUCKETS) == DEFAULT_BUCKETS


def test_another_bucket_count_is_refused_naming_both_and_the_setting(tmp_path: Path) -> None:
    state_buckets(tmp_path, 64)
    with pytest.raises(CheckpointMismatch, match=r"in 64 buckets, this run asks for 128 \(--state-buckets, "
                                                 r"TRIPSCORE_STREAM_STATE_BUCKETS\)"):
        state_buckets(tmp_path, 128)


def test_a_checkpoint_of_the_one_state_per_driver_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "offsets").mkdir()
    with pytest.raises(CheckpointMismatch, match="one state per driver; start a new --checkpoint"):
        state_buckets(tmp_path, 64)
    assert not (tmp_path / LAYOUT_FILE).exists()


@pytest.mark.parametrize("text", ["", "{not json", "[]", '{"buckets": 64}', '{"state_buckets": "64"}',
                                  '{"state_buckets": 0}', '{"state_buckets": true}'])
def test_an_unreadable_layout_is_refused_naming_the_file(tmp_path: Path, text: str) -> None:
    (tmp_path / LAYOUT_FILE).write_text(text)
    with pytest.raises(CheckpointMismatch, match=LAYOUT_FILE.replace(".", r"\.")):
        state_buckets(tmp_path, None)
