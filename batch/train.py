"""`tripscore train`: an MLlib pipeline on a materialized dataset, split by time, saved with its portable export.

Pipeline: Imputer(mean) -> VectorAssembler -> StandardScaler(withMean=False, withStd=True) -> LogisticRegression,
which is exactly what `ModelExport.predict_proba` computes with numpy (docs/spec.md §6).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import Imputer, StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch import metrics, plots
from batch.eventlog import TRUE_P
from batch.materialize import LABEL, TIME_COLUMN, dataset_dir
from batch.options import DatasetError, TrainConfig
from batch.sparkjob import stage_progress
from modelregistry.export import ModelExport
from modelregistry.registry import staged_version
from schemas.features import MODEL_FEATURES

MLLIB_DIR = "mllib"
REPORT_FILE = "report.json"
PLOT_FILES = {"roc": "roc.png", "calibration": "calibration.png", "histogram": "score_histogram.png"}
EXPORT_TOLERANCE = 1e-9  # docs/spec.md §6: the numpy export must match MLlib's probability this closely
_IMPUTED = [f"{name}__imputed" for name in MODEL_FEATURES]


@dataclass(frozen=True)
class Holdout:
    """Holdout rows in numpy: features (n, 12) with NaN for missing, labels, generator truth (or None)."""

    features: np.ndarray
    labels: np.ndarray
    true_p: np.ndarray | None


@dataclass(frozen=True)
class TrainResult:
    """A trained, saved (not promoted) model version."""

    version: str
    folder: Path
    export: ModelExport
    report: dict[str, Any]

    def line(self) -> str:
        """One human summary line."""
        m = self.export.metrics
        oracle = f", oracle AUC {m['oracle_auc']:.4f} ({m['auc'] / m['oracle_auc']:.1%})" if m.get("oracle_auc") else ""
        return (
            f"trained {self.version} on {m['train_rows']:,} examples in {m['train_seconds']:.1f} s: holdout AUC "
            f"{m['auc']:.4f}{oracle}, PR-AUC {m['pr_auc']:.4f}, log loss {m['log_loss']:.4f} -> {self.folder}"
        )


def check_dataset(datasets_dir: Path, name: str) -> Path:
    """The dataset folder, after checking it exists, has the model columns and at least one row."""
    folder = dataset_dir(datasets_dir, name)
    if not folder.is_dir():
        raise DatasetError(f"dataset {name!r}: no folder {folder} (run `tripscore dataset materialize --name {name}`)")
    try:
        dataset = ds.dataset(str(folder), format="parquet")
        rows = dataset.count_rows()
    except Exception as exc:  # pyarrow raises several types for unreadable folders
        raise DatasetError(f"dataset {name!r}: cannot read {folder}: {exc}") from exc
    missing = [c for c in (*MODEL_FEATURES, LABEL, TIME_COLUMN) if c not in dataset.schema.names]
    if missing:
        raise DatasetError(f"dataset {name!r}: missing column(s) {', '.join(missing)}")
    if rows == 0:
        raise DatasetError(f"dataset {name!r} is empty: no offers to learn from")
    return folder


def holdout_start(folder: Path, holdout_fraction: float) -> int:
    """The offer time from which the latest `holdout_fraction` of a dataset's examples form the holdout (exact,
    from the time column alone)."""
    if not 0.0 < holdout_fraction < 1.0:
        raise DatasetError(f"holdout fraction {holdout_fraction} must be in (0, 1)")
    times = ds.dataset(str(folder), format="parquet").to_table(columns=[TIME_COLUMN]).column(0).to_numpy()
    return int(np.quantile(times, 1.0 - holdout_fraction, method="higher"))


def build_pipeline(config: TrainConfig) -> Pipeline:
    """Imputer(mean) -> VectorAssembler -> StandardScaler(std only) -> LogisticRegression."""
    return Pipeline(stages=[
        Imputer(inputCols=list(MODEL_FEATURES), outputCols=_IMPUTED, strategy="mean"),
        VectorAssembler(inputCols=_IMPUTED, outputCol="raw", handleInvalid="keep"),
        StandardScaler(inputCol="raw", outputCol="features", withMean=False, withStd=True),
        LogisticRegression(featuresCol="features", labelCol=LABEL, maxIter=config.max_iter,
                           regParam=config.reg_param, tol=config.tol, family="binomial"),
    ])


def to_export(model: PipelineModel, version: str, prior: float, dataset: str, metrics_: dict[str, Any],
              histogram: dict[str, list[float]]) -> ModelExport:
    """The portable export of a fitted pipeline: imputation means, scaler std, coefficients and intercept."""
    imputer, _, scaler, lr = model.stages
    surrogate = imputer.surrogateDF.first()
    return ModelExport(
        version=version,
        feature_order=list(MODEL_FEATURES),
        coefficients=[float(c) for c in lr.coefficients.toArray()],
        intercept=float(lr.intercept),
        imputation_means=[float(surrogate[name]) for name in MODEL_FEATURES],
        scaler_std=[float(s) for s in scaler.std.toArray()],
        prior=prior,
        dataset=dataset,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        metrics=metrics_,
        score_histogram=histogram,
    )


def load_holdout(datasets_dir: Path, dataset: str, start_ms: int) -> Holdout:
    """The holdout examples (offer time >= `start_ms`) of a dataset, read with pyarrow for numpy scoring."""
    folder = check_dataset(datasets_dir, dataset)
    return _holdout(ds.dataset(str(folder), format="parquet").to_table(filter=ds.field(TIME_COLUMN) >= start_ms))


def _predict(model: PipelineModel, holdout: DataFrame) -> tuple[Holdout, np.ndarray]:
    """MLlib's decline probabilities on the holdout, with the rows they belong to (collected through Arrow)."""
    has_truth = TRUE_P in holdout.columns
    scored = model.transform(holdout).select(
        *MODEL_FEATURES, LABEL, *([TRUE_P] if has_truth else []),
        vector_to_array("probability")[1].alias("p"),
    ).toArrow()
    return _holdout(scored), scored.column("p").to_numpy()


def _holdout(table: pa.Table) -> Holdout:
    """Features (nulls as NaN), labels and the truth (when every row has one) of an Arrow table of examples."""

    def floats(names: Sequence[str]) -> np.ndarray:
        columns = [table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names]
        return np.column_stack(columns) if table.num_rows else np.zeros((0, len(names)))

    true_p = floats([TRUE_P])[:, 0] if TRUE_P in table.column_names else None
    if true_p is not None and np.isnan(true_p).any():
        true_p = None
    return Holdout(floats(MODEL_FEATURES), table.column(LABEL).to_numpy().astype(np.int8), true_p)


def _evaluate(holdout: Holdout, p: np.ndarray) -> dict[str, Any]:
    """Holdout metrics of predictions `p`, with the generator's oracle AUC on the same rows when known."""
    if np.unique(holdout.labels).size < 2:
        raise DatasetError("the holdout has a single class; AUC is undefined (more data or a larger fraction)")
    out = metrics.summary(holdout.labels, p)
    if holdout.true_p is not None:
        out["oracle_auc"] = metrics.roc_auc(holdout.labels, holdout.true_p)
    return out


def train(spark: SparkSession, datasets_dir: Path, models_dir: Path, dataset: str,
          config: TrainConfig | None = None, progress: bool = True) -> TrainResult:
    """Fit on the earlier offers, evaluate on the latest ones, save `models/trip_decline_risk_lr_v<N>/`."""
    config = config or TrainConfig()
    started = time.perf_counter()
    folder = check_dataset(datasets_dir, dataset)
    frame = spark.read.parquet(str(folder.resolve()))
    frame = frame.select(*MODEL_FEATURES, F.col(LABEL).cast("double").alias(LABEL), TIME_COLUMN,
                         *([TRUE_P] if TRUE_P in frame.columns else []))
    start_ms = holdout_start(folder, config.holdout_fraction)
    train_df = frame.where(F.col(TIME_COLUMN) < start_ms).cache()
    holdout_df = frame.where(F.col(TIME_COLUMN) >= start_ms)
    train_rows, positives = train_df.agg(F.count("*"), F.sum(LABEL)).first()
    if not train_rows or positives in (0, train_rows):
        raise DatasetError(f"dataset {dataset!r}: the training split ({train_rows} rows) needs both labels")
    with stage_progress(spark, "train", enabled=progress):
        fit_started = time.perf_counter()
        model = build_pipeline(config).fit(train_df)
        fit_seconds = time.perf_counter() - fit_started
        holdout, p = _predict(model, holdout_df)
    train_df.unpersist()
    evaluation = _evaluate(holdout, p)
    histogram = metrics.score_histogram(p)
    lr = model.stages[-1]
    summary = {
        **evaluation,
        "train_rows": int(train_rows),
        "holdout_rows": int(holdout.labels.size),
        "holdout_start_ms": start_ms,
        "holdout_fraction": config.holdout_fraction,
        "train_base_rate": positives / train_rows,
        "train_seconds": fit_seconds,
        "iterations": int(lr.summary.totalIterations),
    }
    with staged_version(models_dir) as (version, staging):
        export = to_export(model, version, positives / train_rows, dataset, summary, histogram)
        gap = float(np.max(np.abs(export.predict_proba(holdout.features) - p)))
        if gap > EXPORT_TOLERANCE:
            raise RuntimeError(f"numpy export differs from MLlib by {gap:.3g} (> {EXPORT_TOLERANCE:g})")
        export.metrics["export_max_abs_diff"] = gap
        model.write().overwrite().save(str((staging / MLLIB_DIR).resolve()))
        export.save(staging)
        _plots(staging, holdout, p, export)
        report = _report(export, config, lr, time.perf_counter() - started)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return TrainResult(version, models_dir / version, export, report)


def _plots(folder: Path, holdout: Holdout, p: np.ndarray, export: ModelExport) -> None:
    m = export.metrics
    oracle = (holdout.true_p, m["oracle_auc"]) if holdout.true_p is not None else None
    plots.roc_plot(folder / PLOT_FILES["roc"], holdout.labels, p, m["auc"], oracle)
    plots.calibration_plot(folder / PLOT_FILES["calibration"], m["calibration"])
    plots.histogram_plot(folder / PLOT_FILES["histogram"], export.score_histogram)


def _report(export: ModelExport, config: TrainConfig, lr: Any, seconds: float) -> dict[str, Any]:
    """`report.json`: the model at a glance, for humans and the demo summary."""
    m = export.metrics
    return {
        "version": export.version,
        "dataset": export.dataset,
        "created_at": export.created_at,
        "config": config.__dict__,
        "metrics": m,
        "auc_vs_oracle": m["auc"] / m["oracle_auc"] if m.get("oracle_auc") else None,
        "coefficients": dict(zip(MODEL_FEATURES, export.coefficients, strict=True)),
        "intercept": export.intercept,
        "objective_history_tail": [float(x) for x in lr.summary.objectiveHistory[-3:]],
        "plots": PLOT_FILES,
        "seconds_total": seconds,
    }
