"""`tripscore retrain` (for cron): materialize, train, and promote only a challenger at least as good as the champion.

Champion/challenger: both exports are scored with numpy on the challenger's time holdout; the challenger is
promoted when its AUC >= the champion's (or when nothing is active). The command prints the outcome as one JSON
line. Exit codes (for schedulers): 0 promoted, 3 kept (champion stays active), 1 failed (the reason on stderr),
2 bad arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from batch.materialize import materialize
from batch.metrics import roc_auc
from batch.options import TrainConfig
from batch.train import TrainResult, load_holdout, train
from featurestore.base import OnlineStore
from modelregistry.export import ModelExport
from modelregistry.registry import active_version, load_export, promote

EXIT_PROMOTED = 0
EXIT_FAILED = 1
EXIT_KEPT = 3
OUTCOME_METRICS = ("auc", "pr_auc", "log_loss", "base_rate", "oracle_auc", "train_rows", "holdout_rows")
"""The challenger's holdout metrics the outcome line carries (the full set is in its report.json)."""


@dataclass(frozen=True)
class Verdict:
    """The champion/challenger comparison on one holdout."""

    challenger: str
    challenger_auc: float
    champion: str | None
    champion_auc: float | None
    holdout_rows: int

    @property
    def promote(self) -> bool:
        """Whether the challenger should become ACTIVE."""
        return self.champion_auc is None or self.challenger_auc >= self.champion_auc

    def line(self) -> str:
        """The one summary line cron mails."""
        rows = f"on {self.holdout_rows:,} holdout offers"
        if self.champion is None:
            return f"retrain: promoted {self.challenger} (AUC {self.challenger_auc:.4f} {rows}; nothing was active)"
        cmp = f"AUC {self.challenger_auc:.4f} vs champion {self.champion} {self.champion_auc:.4f} {rows}"
        if self.promote:
            return f"retrain: promoted {self.challenger} ({cmp})"
        return f"retrain: kept {self.champion}; challenger {self.challenger} is worse ({cmp})"

    @property
    def exit_code(self) -> int:
        """0 promoted, 3 kept."""
        return EXIT_PROMOTED if self.promote else EXIT_KEPT

    def outcome(self, dataset: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """The outcome a scheduler records: what is active now, both versions and AUCs, the challenger's metrics."""
        return {
            "outcome": "promoted" if self.promote else "kept",
            "exit_code": self.exit_code,
            "active": self.challenger if self.promote else self.champion,
            "challenger": self.challenger,
            "champion": self.champion,
            "challenger_auc": self.challenger_auc,
            "champion_auc": self.champion_auc,
            "holdout_rows": self.holdout_rows,
            "dataset": dataset,
            "holdout_metrics": {name: metrics[name] for name in OUTCOME_METRICS if name in metrics},
        }


def compare(models_dir: Path, datasets_dir: Path, challenger: ModelExport) -> Verdict:
    """Score the challenger and the active champion with numpy on the challenger's holdout."""
    holdout = load_holdout(datasets_dir, challenger.dataset, int(challenger.metrics["holdout_start_ms"]))
    challenger_auc = roc_auc(holdout.labels, challenger.predict_proba(holdout.features))
    champion = active_version(models_dir)
    champion_auc = None
    if champion is not None:
        champion_auc = roc_auc(holdout.labels, load_export(models_dir, champion).predict_proba(holdout.features))
    return Verdict(challenger.version, challenger_auc, champion, champion_auc, int(holdout.labels.size))


def retrain(spark: SparkSession, store: OnlineStore, events_path: Path, datasets_dir: Path, models_dir: Path,
            dataset: str, config: TrainConfig | None = None, progress: bool = True) -> tuple[TrainResult, Verdict]:
    """Materialize `dataset` from the event log, train a challenger, promote it if it beats the champion."""
    materialize(spark, store, events_path, datasets_dir, dataset, progress=progress)
    result = train(spark, datasets_dir, models_dir, dataset, config, progress=progress)
    verdict = compare(models_dir, datasets_dir, result.export)
    if verdict.promote:
        promote(models_dir, result.version)
    return result, verdict
