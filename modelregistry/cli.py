"""Subcommands `tripscore models list` and `tripscore models promote VERSION`."""

from __future__ import annotations

import argparse
import json

from modelregistry.export import ModelError
from modelregistry.registry import describe_versions, promote
from runtime.config import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `models` command group."""
    models = sub.add_parser("models", help="the model registry: versions and the ACTIVE pointer")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="every version with its metrics; * marks ACTIVE")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_list)
    prom = models_sub.add_parser("promote", help="point ACTIVE at a version (after checking its export loads)")
    prom.add_argument("version", help="e.g. trip_decline_risk_lr_v3")
    prom.set_defaults(func=_promote)


def _fmt(value: float | None) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def _list(args: argparse.Namespace) -> int:
    models_dir = load_settings().models_dir
    rows = describe_versions(models_dir)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print(f"no models in {models_dir} (train one with `tripscore train`)")
        return 0
    print(f"{'':1} {'version':28} {'auc':>7} {'oracle':>7} {'train rows':>11}  {'created_at':25} dataset")
    for row in rows:
        mark = "*" if row["active"] else " "
        if "error" in row:
            print(f"{mark} {row['version']:28} CORRUPT: {row['error']}")
            continue
        rows_text = f"{row['train_rows']:,}" if row.get("train_rows") is not None else "-"
        print(f"{mark} {row['version']:28} {_fmt(row['auc']):>7} {_fmt(row['oracle_auc']):>7} {rows_text:>11}  "
              f"{row['created_at']:25} {row['dataset']}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    models_dir = load_settings().models_dir
    try:
        export = promote(models_dir, args.version)
    except ModelError as exc:
        print(f"tripscore models promote: error: {exc}")
        return 1
    print(f"ACTIVE -> {export.version} (AUC {_fmt(export.metrics.get('auc'))}, dataset {export.dataset})")
    return 0
