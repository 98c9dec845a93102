"""`tripscore retrain` (for cron): materialize, train, and promote only a challenger at least as good as the champion.

Champion/challenger: both exports are scored with numpy on the challenger's time holdout; the challenger is
promoted when its AUC >= the champion's (or when nothing is active). Exit codes: 0 promoted, 3 kept (champion
stays active), 1 error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from batch.materialize import materialize
from batch.metrics import roc_auc
from batch.options import TrainConfig
from batch.train import TrainResult, load_holdout, train
from featurestore.base import OnlineStore
from modelregistry.export import ModelExport
from modelregistry.registry import active_version, load_export, promote

EXIT_PROMOTED = 0
EXIT_KEPT = 3


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
