"""Online/offline consistency: recompute sampled drivers' records from the event log and compare with the store.

Two questions per sampled driver: are the stored bins the fold of the logged events up to the record's
`_event_ms` (correctness), and has the record applied exactly the log's events (completeness: its `_event_ms` and
`_n_events` against the log's latest event and count, exact duplicates counted once)?
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.fold import DriverState, fold_order
from featurestore import open_store
from featurestore.base import OnlineStore, is_number, stored_int
from runtime.config import load_settings
from schemas.features import FOLD_BINS

if TYPE_CHECKING:
    import pyarrow.dataset as ds

COMPARED_BINS = FOLD_BINS
EVENT_COLUMNS = ["driver_id", "ts_ms", "event_id", "event_type", "rating"]


@dataclass
class ConsistencyReport:
    """Per-bin mismatch counts over the sampled drivers that the store holds, and how many lag or lead the log."""

    drivers: int = 0
    missing_in_store: int = 0
    behind: int = 0  # the record misses the driver's latest logged events
    ahead: int = 0  # the record has applied more, or newer, events than the log holds
    mismatches: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def rates(self) -> dict[str, float]:
        """Mismatch rate per compared bin."""
        return {name: (self.mismatches[name] / self.drivers if self.drivers else 0.0) for name in COMPARED_BINS}

    def worst_rate(self) -> float:
        """The highest per-bin mismatch rate."""
        return max(self.rates().values(), default=0.0)

    def incomplete_rate(self) -> float:
        """The share of sampled drivers whose record is missing, behind or ahead of the log."""
        sampled = self.drivers + self.missing_in_store
        return (self.missing_in_store + self.behind + self.ahead) / sampled if sampled else 0.0


def same_value(offline: Any, online: Any) -> bool:
    """Whether a stored value is the recomputed one: numbers alike (floats within a relative 1e-9), lists item by
    item (an absent list as an empty one); a stored value of another kind (a string, a bool, a list where a number
    belongs, a number where a list belongs) never is."""
    if isinstance(offline, list) or isinstance(online, list):
        offline, online = ([] if offline is None else offline), ([] if online is None else online)
        return (isinstance(offline, list) and isinstance(online, list) and len(offline) == len(online)
                and all(map(same_value, offline, online)))
    if offline is None or online is None:
        return offline is online
    if not (is_number(offline) and is_number(online)):
        return False
    if isinstance(offline, float) or isinstance(online, float):
        return math.isclose(offline, online, rel_tol=1e-9, abs_tol=1e-12)
    return offline == online


def stored_version(online: Mapping[str, Any]) -> tuple[int, int] | None:
    """The record's (`_event_ms`, `_n_events`), or None when either is not an int."""
    try:
        return stored_int(online.get("_event_ms")), stored_int(online.get("_n_events", 0))
    except ValueError:
        return None


def event_log(paths: Sequence[Path]) -> ds.Dataset:
    """One dataset over the Parquet files of one or more event-log folders."""
    import pyarrow.dataset as ds  # here, not at the top: `tripscore` builds its parser from this module

    return ds.dataset([ds.dataset(str(p), format="parquet", exclude_invalid_files=True) for p in paths])


def load_driver_events(events_paths: Sequence[Path], driver_ids: Sequence[str]) -> dict[str, list[tuple]]:
    """The fold tuples of the given drivers from the event log."""
    import pyarrow.compute as pc

    table = event_log(events_paths).to_table(columns=EVENT_COLUMNS, filter=pc.field("driver_id").isin(list(driver_ids)))
    events: dict[str, list[tuple]] = {d: [] for d in driver_ids}
    columns = [table.column(name).to_pylist() for name in EVENT_COLUMNS]
    for driver_id, ts_ms, event_id, event_type, rating in zip(*columns, strict=True):
        events[driver_id].append((ts_ms, event_id, event_type, rating))
    return events


def compare_record(offline: Mapping[str, Any], online: Mapping[str, Any]) -> list[str]:
    """The bins whose offline and online values differ."""
    return [name for name in COMPARED_BINS if not same_value(offline.get(name), online.get(name))]


def completeness(online: Mapping[str, Any], logged: Sequence[tuple]) -> dict[str, Any] | None:
    """Where the record stands against the log (`logged`: the driver's events in `fold_order`): None when its
    (`_event_ms`, `_n_events`) equal the log's (latest event time, event count), else `behind` or `ahead`, or
    `unreadable` when they are not ints."""
    stored = stored_version(online)
    log = (logged[-1][0], len(logged)) if logged else (-1, 0)
    if stored == log:
        return None
    return {"store": "unreadable" if stored is None else "behind" if stored < log else "ahead",
            "_event_ms": {"log": log[0], "store": online.get("_event_ms")},
            "_n_events": {"log": log[1], "store": online.get("_n_events", 0)}}


def check_consistency(
    store: OnlineStore, events_paths: Sequence[Path], driver_ids: Sequence[str], max_examples: int = 5
) -> ConsistencyReport:
    """Refold each driver's logged events up to the store's `_event_ms` and count per-bin mismatches; count the
    records behind or ahead of the log."""
    report = ConsistencyReport()
    rows = store.read(list(driver_ids), COMPARED_BINS)
    events = load_driver_events(events_paths, driver_ids)
    for row in rows:
        if not row.found:
            report.missing_in_store += 1
            continue
        report.drivers += 1
        logged = fold_order(events[row.entity_id])
        version = stored_version(row.bins)
        upto = version[0] if version else math.inf  # unreadable: the whole log, and `_event_ms` mismatches
        offline = DriverState().apply_all(e for e in logged if e[0] <= upto).to_bins()
        bad = compare_record(offline, row.bins)
        report.mismatches.update(bad)
        position = completeness(row.bins, logged)
        if position is not None:
            report.behind += position["store"] == "behind"
            report.ahead += position["store"] == "ahead"
        if (bad or position) and len(report.examples) < max_examples:
            report.examples.append({"driver_id": row.entity_id, **({"completeness": position} if position else {}),
                                    **{b: {"offline": offline.get(b), "online": row.bins.get(b)} for b in bad}})
    return report


def sample_driver_ids(events_paths: Sequence[Path], sample: int, seed: int) -> list[str]:
    """A reproducible random sample of the drivers in the event log."""
    import pyarrow.compute as pc

    table = event_log(events_paths).to_table(columns=["driver_id"])
    drivers = sorted(pc.unique(table.column("driver_id")).to_pylist())
    return random.Random(seed).sample(drivers, min(sample, len(drivers)))


def run(args: argparse.Namespace) -> int:
    """`tripscore consistency`: print per-bin mismatch rates and the records behind or ahead of the log; exit 1
    when either rate is above the threshold."""
    settings = load_settings()
    paths = [Path(p) for p in args.events] if args.events else [settings.home / "events"]
    drivers = sample_driver_ids(paths, args.sample, args.seed)
    report = check_consistency(open_store(settings), paths, drivers)
    summary = {
        "drivers_compared": report.drivers,
        "missing_in_store": report.missing_in_store,
        "behind_log": report.behind,
        "ahead_of_log": report.ahead,
        "worst_mismatch_rate": report.worst_rate(),
        "mismatch_rates": {k: v for k, v in report.rates().items() if v > 0},
        "examples": report.examples,
    }
    print(json.dumps(summary, indent=None if args.json else 2, default=repr))  # repr: a stored value JSON lacks
    if report.drivers == 0:
        print("no sampled driver has a record in the store")
        return 2
    if report.missing_in_store or report.behind:
        print("records missing or behind the log: `tripscore backfill --events ...` repairs them (README, Operations)",
              file=sys.stderr)
    return 1 if max(report.worst_rate(), report.incomplete_rate()) > args.threshold else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `tripscore consistency`."""
    parser = sub.add_parser("consistency", help="compare store records with a recomputation from the event log")
    parser.add_argument("--events", nargs="+", help="Parquet event-log folders (default <home>/events)")
    parser.add_argument("--sample", type=int, default=500, help="drivers to compare (default 500)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="max tolerated mismatch rate per bin, and share of records missing, behind or ahead")
    parser.add_argument("--json", action="store_true", help="one-line JSON output")
    parser.set_defaults(func=run)
