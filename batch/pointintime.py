"""Per-driver folds for the Spark jobs: final records (backfill) and point-in-time examples (docs/spec.md §3.3).

The jobs hash-partition the log by driver and sort each partition by (driver_id, ts_ms, event_id), so every
driver's events arrive contiguous and in fold order through one Arrow stream per partition (`driver_runs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch.eventlog import FOLD_COLUMNS, TRUE_P
from features.derive import model_features
from features.fold import DriverState, fold, fold_order
from schemas.features import FOLD_BINS, MODEL_FEATURES

LABEL_WINDOW_MS = 120_000  # docs/spec.md §3.3: a response must come within 120 s of the offer
RECORD_BINS = FOLD_BINS  # not the store's stamp `_updated_ms`, nor the stream's state
OFFER_COLUMNS = ("trip_id", "pickup_eta_min", "surge_multiplier", "est_duration_min", "rider_rating")
PIT_COLUMNS = (*FOLD_COLUMNS, *OFFER_COLUMNS)
"""Columns of the point-in-time fold: driver_id, the fold tuple and the offer fields (then TRUE_P when logged)."""
RESPONSE_TYPES = frozenset({"offer_accepted", "offer_declined"})
EXAMPLE_SCHEMA = pa.schema(
    [pa.field("driver_id", pa.string(), nullable=False), pa.field("trip_id", pa.string()),
     pa.field("offer_ts_ms", pa.int64(), nullable=False)]
    + [pa.field(name, pa.float64()) for name in MODEL_FEATURES]
    + [pa.field("label", pa.int32(), nullable=False), pa.field(TRUE_P, pa.float64())]
)
"""One training example per offer: keys, the 12 model features (null = missing), label, generator truth."""

PitEvent = tuple[int, str, str, float | None, str | None, float | None, float | None, float | None, float | None,
                 float | None]
"""(ts_ms, event_id, event_type, rating, trip_id, pickup_eta_min, surge_multiplier, est_duration_min,
rider_rating, true_decline_p): what the point-in-time fold needs of an event."""


def driver_runs(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[str, list[tuple]]]:
    """(driver_id, rows) per driver from Arrow batches sorted by their first column, `driver_id`; each row is a
    tuple of the other columns. A driver's run may span batches."""
    current: str | None = None
    rows: list[tuple] = []
    for batch in batches:
        if batch.num_rows == 0:
            continue
        drivers = batch.column(0)
        changes = np.flatnonzero(pc.not_equal(drivers[1:], drivers[:-1]).to_numpy(zero_copy_only=False)) + 1
        values = list(zip(*(column.to_pylist() for column in batch.columns[1:]), strict=True))
        starts = [0, *changes.tolist()]
        ends = [*changes.tolist(), batch.num_rows]
        for start, end in zip(starts, ends, strict=True):
            driver = drivers[start].as_py()
            if driver != current:
                if current is not None:
                    yield current, rows
                current, rows = driver, []
            rows.extend(values[start:end])
    if current is not None:
        yield current, rows


def driver_record(driver_id: str, events: Sequence[tuple]) -> tuple[str, dict[str, Any]]:
    """The store record of one driver: `features.fold` over its (ts_ms, event_id, event_type, rating) events."""
    bins = fold(events).to_bins()
    return driver_id, {name: bins[name] for name in RECORD_BINS if name in bins}


def offer_label(offer_ts: int, responses: Iterable[tuple[int, str]]) -> int:
    """docs/spec.md §3.3 label from the trip's responses in time order: the first one within 120 s of the offer decides
    (declined 1, accepted 0); no response within 120 s is 1."""
    for ts, kind in responses:
        if offer_ts <= ts <= offer_ts + LABEL_WINDOW_MS:
            return 0 if kind == "offer_accepted" else 1
    return 1


def driver_examples(events: Sequence[PitEvent]) -> list[tuple]:
    """One example per `trip_offered` of one driver: (trip_id, offer_ts_ms, *12 features, label, true_decline_p).

    The fold runs over the events in `fold_order` (an exact duplicate of an offer is one example); each offer's store
    features are derived from the state just before the offer is applied (the last event strictly before it),
    at the offer's time.
    """
    ordered = fold_order(events)
    responses: dict[str | None, list[tuple[int, str]]] = {}
    for ts, _, kind, _, trip, *_ in ordered:
        if kind in RESPONSE_TYPES:
            responses.setdefault(trip, []).append((ts, kind))
    examples = []
    state = DriverState()
    for ts, event_id, kind, rating, trip, eta, surge, duration, rider, true_p in ordered:
        if kind == "trip_offered":
            features = model_features(state.to_bins(), ts, eta, rider, surge, duration)
            examples.append((trip, ts, *features, offer_label(ts, responses.get(trip, ())), true_p))
        state.apply(ts, event_id, kind, rating)
    return examples


def examples_batch(rows: list[tuple[str, tuple]]) -> pa.RecordBatch:
    """(driver_id, example) pairs as an Arrow batch of EXAMPLE_SCHEMA; NaN features become nulls."""
    columns = list(zip(*((driver, *example) for driver, example in rows), strict=True)) if rows else \
        [()] * len(EXAMPLE_SCHEMA)
    arrays = [pa.array(c, type=f.type, from_pandas=True) for c, f in zip(columns, EXAMPLE_SCHEMA, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=EXAMPLE_SCHEMA)


def partition_examples(batches: Iterable[pa.RecordBatch], has_truth: bool,
                       batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
    """mapInArrow body of materialization: examples of every driver of a sorted partition, in Arrow batches."""
    pending: list[tuple[str, tuple]] = []
    for driver, rows in driver_runs(batches):
        events = rows if has_truth else [(*row, None) for row in rows]
        pending.extend((driver, example) for example in driver_examples(events))
        if len(pending) >= batch_rows:
            yield examples_batch(pending)
            pending = []
    if pending:
        yield examples_batch(pending)
