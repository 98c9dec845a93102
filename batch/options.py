"""What the `tripscore` batch commands need before a job runs: the default dataset, training knobs, dataset errors.

Kept apart from the Spark jobs so the CLI can build its parser without importing pyspark.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DATASET = "trip-decline-risk-v1"


class DatasetError(ValueError):
    """A dataset is missing, empty, lacks columns or cannot be split into train and holdout."""


@dataclass(frozen=True)
class TrainConfig:
    """Training knobs."""

    holdout_fraction: float = 0.2  # the latest share of offer time held out
    max_iter: int = 100
    reg_param: float = 0.0
    tol: float = 1e-6
