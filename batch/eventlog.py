"""The Parquet event log: normalised TripEvent columns (derived from the contract) plus the generator's truth."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from schemas.messages import TRIP_EVENT

TRUE_P = "true_decline_p"
"""Side column of the generator: each offer's true decline probability (null elsewhere; the contract ignores it)."""
FOLD_COLUMNS = ("driver_id", "ts_ms", "event_id", "event_type", "rating")
"""What the fold needs of each event, plus the driver key."""
FILE_PREFIX = "events-"

_ARROW_TYPES = {"str": pa.string(), "enum": pa.string(), "float": pa.float64(), "int": pa.int32(), "ts": pa.int64()}

EVENT_SCHEMA = pa.schema(
    [pa.field(f.out_name, _ARROW_TYPES[f.kind], nullable=f.required is not True) for f in TRIP_EVENT]
    + [pa.field(TRUE_P, pa.float64())]
)
"""Arrow schema of the log, derived from the TripEvent field specifications like the Spark schema."""
EVENT_COLUMNS = tuple(EVENT_SCHEMA.names)


class EventLogError(ValueError):
    """An event log is missing, empty or lacks required columns."""


def write_events(table: pa.Table, out_dir: Path, rows_per_file: int = 500_000) -> list[Path]:
    """Replace the log in `out_dir` with `table` (sorted by time), split into `events-NNNNN.parquet` files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{FILE_PREFIX}*.parquet"):
        old.unlink()
    table = table.select(list(EVENT_COLUMNS)).cast(EVENT_SCHEMA)
    table = table.sort_by([("ts_ms", "ascending"), ("event_id", "ascending")])
    paths = []
    for index, start in enumerate(range(0, max(table.num_rows, 1), rows_per_file)):
        path = out_dir / f"{FILE_PREFIX}{index:05d}.parquet"
        pq.write_table(table.slice(start, rows_per_file), path, row_group_size=128_000)
        paths.append(path)
    return paths


def require_columns(available: Sequence[str], required: Sequence[str], what: str) -> None:
    """EventLogError naming every missing column."""
    missing = [name for name in required if name not in available]
    if missing:
        raise EventLogError(f"{what}: missing column(s) {', '.join(missing)}")


def read_events(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The log at `path` (a file or a folder of Parquet files); a clear error when absent or incomplete."""
    if not path.exists():
        raise EventLogError(f"{path}: no event log (run `tripscore generate` first?)")
    dataset = ds.dataset(str(path), format="parquet")
    require_columns(dataset.schema.names, columns or FOLD_COLUMNS, str(path))
    return dataset.to_table(columns=list(columns) if columns else None)


def to_messages(table: pa.Table) -> Iterator[dict[str, Any]]:
    """TripEvent messages (docs/spec.md §2, `ts` as epoch ms) from log rows; null fields and side columns
    are left out."""
    names = [f.out_name for f in TRIP_EVENT if f.out_name in table.column_names]
    for batch in table.select(names).to_batches():
        for row in batch.to_pylist():
            yield {("ts" if k == "ts_ms" else k): v for k, v in row.items() if v is not None}
