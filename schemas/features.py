"""The feature registry (docs/spec.md §3): groups, bins, types and meanings, read by every stage."""

from __future__ import annotations

from dataclasses import dataclass

MAX_BIN_BYTES = 15  # Aerospike's bin-name limit
ENTITY = "driver"
RECORD_SET = "driver-features"
BIN_TYPES = ("int", "float", "list", "bytes")
STREAM_STATE_BIN = "_stream"


@dataclass(frozen=True)
class FeatureGroup:
    """A named family of bins sharing a prefix."""

    name: str
    prefix: str
    description: str


@dataclass(frozen=True)
class BinSpec:
    """One stored bin of the driver record."""

    name: str
    group: str
    dtype: str
    description: str
    internal: bool = False  # fold state kept so any stage can continue the fold; not a served feature

    def __post_init__(self) -> None:
        if not self.name or len(self.name.encode("utf-8")) > MAX_BIN_BYTES:
            raise ValueError(f"bin name {self.name!r} must be 1-{MAX_BIN_BYTES} bytes")
        if self.dtype not in BIN_TYPES:
            raise ValueError(f"bin {self.name!r}: dtype {self.dtype!r} is not one of {BIN_TYPES}")
        group = GROUPS_BY_NAME.get(self.group)
        if group is None:
            raise ValueError(f"bin {self.name!r}: unknown feature group {self.group!r}")
        if not self.name.startswith(group.prefix):
            raise ValueError(f"bin {self.name!r} must start with its group prefix {group.prefix!r}")


GROUPS: tuple[FeatureGroup, ...] = (
    FeatureGroup("driver-stats", "ds_", "lifetime behaviour of a driver"),
    FeatureGroup("driver-activity", "da_", "the driver's current day, shift and last hour"),
    FeatureGroup("meta", "_", "bookkeeping: event time of the latest applied event, write time"),
)
GROUPS_BY_NAME = {group.name: group for group in GROUPS}

BINS: tuple[BinSpec, ...] = (
    BinSpec("ds_decl_rate", "driver-stats", "float", "lifetime declines / (accepts + declines)"),
    BinSpec("ds_avg_rating", "driver-stats", "float", "lifetime mean of trip_rated.rating"),
    BinSpec("ds_total_trips", "driver-stats", "int", "lifetime trip_completed count"),
    BinSpec("ds_n_accept", "driver-stats", "int", "lifetime offer_accepted count", internal=True),
    BinSpec("ds_n_decline", "driver-stats", "int", "lifetime offer_declined count", internal=True),
    BinSpec("ds_n_rated", "driver-stats", "int", "lifetime trip_rated count", internal=True),
    BinSpec("ds_rating_sum", "driver-stats", "float", "lifetime sum of ratings", internal=True),
    BinSpec("da_trips_day", "driver-activity", "int", "trip_completed count on UTC day da_day"),
    BinSpec("da_day", "driver-activity", "int", "UTC day (days since epoch) of the latest event"),
    BinSpec("da_shift_start", "driver-activity", "int", "epoch ms of the open shift's start, 0 off shift"),
    BinSpec("da_consec_trips", "driver-activity", "int", "trips since shift start or the last 30-min gap"),
    BinSpec("da_accept_1h", "driver-activity", "float", "accept share of responses in the last 60 min"),
    BinSpec("da_resp_1h", "driver-activity", "list", "responses in the last 60 min: [ts_ms, accepted]*",
            internal=True),
    BinSpec("_event_ms", "meta", "int", "event time of the latest applied event"),
    BinSpec("_n_events", "meta", "int", "events applied; orders writes with equal _event_ms", internal=True),
    BinSpec("_updated_ms", "meta", "int", "wall-clock time of the write"),
    BinSpec(STREAM_STATE_BIN, "meta", "bytes", "the stream's fold state: pending and recent events, source offsets",
            internal=True),
)
BINS_BY_NAME = {spec.name: spec for spec in BINS}
BIN_NAMES = tuple(spec.name for spec in BINS)
LIST_BINS = frozenset(spec.name for spec in BINS if spec.dtype == "list")
"""Bins that hold lists, not numbers."""
FOLD_BINS = tuple(name for name in BIN_NAMES if name not in ("_updated_ms", STREAM_STATE_BIN))
"""The bins of the fold (`features.fold.DriverState.to_bins`): what every path computes alike."""
NOT_NUMERIC_BINS = frozenset(spec.name for spec in BINS if spec.dtype in ("list", "bytes"))
"""Bins a feature matrix cannot hold."""
SERVED_BINS = tuple(s.name for s in BINS if not s.internal and s.group != "meta")
"""Bins the model features are derived from (docs/spec.md §3.2), the scorer's batch-read selection."""

MODEL_FEATURES: tuple[str, ...] = (
    "decline_rate",
    "avg_rating",
    "trips_today",
    "hours_on_shift",
    "consecutive_trips",
    "acceptance_rate_1h",
    "total_lifetime_trips",
    "pickup_eta_min",
    "rider_rating",
    "surge_multiplier",
    "est_trip_duration_min",
    "is_peak_hour",
)
"""The 12 model inputs, in the order every model and export uses."""
