"""`tripscore dataset materialize`: one point-in-time example per offer (docs/spec.md §3.3), Parquet plus
Dataset metadata."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from batch.eventlog import TRUE_P
from batch.options import DEFAULT_DATASET
from batch.pointintime import EXAMPLE_SCHEMA, LABEL_WINDOW_MS, PIT_COLUMNS, partition_examples
from batch.sparkjob import read_event_log, sorted_by_driver, stage_progress
from featurestore.base import OnlineStore
from featurestore.metadata import Dataset, Feature, register_feature_metadata
from schemas.features import BINS_BY_NAME, MODEL_FEATURES, SERVED_BINS

LABEL = "label"
TIME_COLUMN = "offer_ts_ms"


@dataclass(frozen=True)
class MaterializeResult:
    """What a materialization produced."""

    dataset: Dataset
    rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        """Examples materialized per second of the Spark job."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One human summary line."""
        attrs = self.dataset.attrs
        return (
            f"dataset {self.dataset.name}: {self.rows:,} examples (label rate {attrs['label_rate']:.3f}) "
            f"-> {self.dataset.location} in {self.seconds:.1f} s = {self.rows_per_s:,.0f} rows/s"
        )


def dataset_dir(datasets_dir: Path, name: str) -> Path:
    """Where dataset `name` lives: `<datasets_dir>/<name>/`."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"dataset name {name!r} must be a plain folder name")
    return datasets_dir / name


def materialize(spark: SparkSession, store: OnlineStore, events_path: Path, datasets_dir: Path,
                name: str = DEFAULT_DATASET, progress: bool = True) -> MaterializeResult:
    """Fold each driver's events (partitioned and sorted by driver) into examples; write Parquet; save metadata."""
    out = dataset_dir(datasets_dir, name).resolve()
    events = read_event_log(spark, events_path, PIT_COLUMNS, optional=(TRUE_P,))
    has_truth = TRUE_P in events.columns
    examples = sorted_by_driver(events).mapInArrow(lambda batches: partition_examples(batches, has_truth),
                                                   from_arrow_schema(EXAMPLE_SCHEMA))
    started = time.perf_counter()
    tmp = out.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with stage_progress(spark, f"materialize {name}", enabled=progress):
        examples.write.parquet(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    seconds = time.perf_counter() - started
    stats = _label_stats(out)
    register_feature_metadata(store)
    dataset = Dataset(
        name=name,
        description="one example per trip_offered: driver features as of the last event strictly before the "
                    "offer, request features of the offer, label 1 = declined or no answer within 120 s",
        features=[Feature(b.group, b.name, b.dtype).fid for b in map(BINS_BY_NAME.get, SERVED_BINS)],
        predicate="event_type = 'trip_offered'",
        location=str(out),
        attrs={
            "entity": "driver",
            "format": "parquet",
            "columns": list(EXAMPLE_SCHEMA.names),
            "model_features": list(MODEL_FEATURES),
            "label": LABEL,
            "label_window_ms": LABEL_WINDOW_MS,
            "time_column": TIME_COLUMN,
            "events": str(events_path.resolve()),
            "has_true_p": has_truth,
            **stats,
        },
        tags=["training", "point-in-time", "trip-decline-risk"],
    )
    dataset.save(store)
    return MaterializeResult(dataset, stats["rows"], seconds)


def _label_stats(folder: Path) -> dict[str, float | int | None]:
    """Row count, label rate and offer-time range of a written dataset (read back with pyarrow)."""
    table = pq.read_table(folder, columns=[LABEL, TIME_COLUMN])
    rows = table.num_rows
    labels = table.column(LABEL).to_numpy()
    times = table.column(TIME_COLUMN).to_numpy()
    return {
        "rows": rows,
        "label_rate": float(labels.mean()) if rows else 0.0,
        "offer_ts_min": int(times.min()) if rows else None,
        "offer_ts_max": int(times.max()) if rows else None,
    }
