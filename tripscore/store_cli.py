"""`tripscore store info|init` and `tripscore features get DRIVER_ID`: look into the online store."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from features.derive import STORE_FEATURE_COUNT, model_features, record_status
from featurestore import StoreError, open_store
from featurestore.base import now_ms
from featurestore.metadata import register_feature_metadata
from runtime.config import Settings, load_settings
from schemas.features import FOLD_BINS, MODEL_FEATURES
from schemas.timestamps import iso_ms

STORE_FEATURES = MODEL_FEATURES[:STORE_FEATURE_COUNT]
REQUEST_FEATURES = MODEL_FEATURES[STORE_FEATURE_COUNT:]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `store` and `features` commands."""
    store = subparsers.add_parser("store", help="the online feature store")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    info = store_commands.add_parser("info", help="backend, location, record count and freshness")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_info)
    init = store_commands.add_parser("init", help="create the store and save the feature registry as metadata")
    init.set_defaults(func=cmd_init)

    features = subparsers.add_parser("features", help="driver feature vectors in the online store")
    feature_commands = features.add_subparsers(dest="features_command", required=True)
    get = feature_commands.add_parser("get", help="one driver's bins with statuses, age and model features")
    get.add_argument("driver_id")
    get.add_argument("--json", action="store_true", help="print one JSON object")
    get.set_defaults(func=cmd_get)

    for parser in (info, init, get):
        parser.add_argument("--store", choices=("sqlite", "aerospike"), help="backend (TRIPSCORE_STORE)")
        parser.add_argument("--sqlite-path", type=Path, help="SQLite file (TRIPSCORE_SQLITE_PATH)")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(store=args.store, sqlite_path=args.sqlite_path)


def _when(ms: int | None, now: int) -> str:
    if ms is None:
        return "-"
    return f"{iso_ms(ms)} ({(now - ms) / 1000:.1f} s ago)"


def cmd_info(args: argparse.Namespace) -> int:
    """Print the store summary; exit 2 when the store fails."""
    try:
        store = open_store(_settings(args))
        info, health = store.info(), store.health()
    except StoreError as exc:
        print(f"store error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**vars(info), "health": health}))
        return 0
    now = now_ms()
    for label, value in (
        ("backend", info.backend),
        ("location", info.location),
        ("health", "ok" if health.get("ok") else f"FAILING {health.get('error', '')}"),
        ("records", info.records),
        ("newest event", _when(info.newest_event_ms, now)),
        ("oldest event", _when(info.oldest_event_ms, now)),
        ("newest write", _when(info.newest_update_ms, now)),
        ("metadata", " ".join(f"{name}={count}" for name, count in info.metadata_counts.items())),
    ):
        print(f"{label:<14}{value}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Create the store if needed and register the feature metadata."""
    try:
        groups, features = register_feature_metadata(open_store(_settings(args)))
    except StoreError as exc:
        print(f"store error: {exc}", file=sys.stderr)
        return 2
    print(f"registered {groups} feature groups and {features} features")
    return 0


def feature_view(driver_id: str, settings: Settings) -> dict[str, Any]:
    """One driver's record: every bin with its status, the record status and age, the store model features."""
    store = open_store(settings)
    row = store.read([driver_id], (*FOLD_BINS, "_updated_ms"))[0]
    at = row.now_ms
    values = model_features(row.bins, at, math.nan, math.nan, math.nan, math.nan)[:STORE_FEATURE_COUNT]
    return {
        "driver_id": driver_id,
        "backend": store.backend,
        "found": row.found,
        "status": record_status(row.bins, at, settings.max_feature_age_s * 1000),
        "age_ms": row.age_ms,
        "updated_ms": (row.bins or {}).get("_updated_ms"),
        "bins": row.bins,
        "bin_status": row.statuses,
        "model_features": {name: None if math.isnan(v) else v for name, v in zip(STORE_FEATURES, values, strict=True)},
        "request_features": list(REQUEST_FEATURES),
        "at_ms": at,
    }


def cmd_get(args: argparse.Namespace) -> int:
    """Print one driver's feature vector; exit 1 when there is no record, 2 when the store fails."""
    try:
        view = feature_view(args.driver_id, _settings(args))
    except StoreError as exc:
        print(f"store error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(view))
        return 0 if view["found"] else 1
    if not view["found"]:
        print(f"driver {args.driver_id!r}: no record in the {view['backend']} store")
        return 1
    now = view["at_ms"]
    print(f"driver {args.driver_id}  status {view['status']}  event {_when(view['bins'].get('_event_ms'), now)}")
    print(f"  written {_when(view['updated_ms'], now)}")
    print(f"{'bin':<17}{'status':<9}value")
    for name, status in view["bin_status"].items():
        print(f"{name:<17}{status:<9}{json.dumps(view['bins'].get(name))}")
    print(f"\nmodel features at now ({len(STORE_FEATURES)} from the store; request features come with each request)")
    for name, value in view["model_features"].items():
        print(f"{name:<22}{'-' if value is None else f'{value:.6g}'}")
    for name in view["request_features"]:
        print(f"{name:<22}(request)")
    return 0
