"""`tripscore schemas export [--check]`: the JSON Schema files of the message contracts, for other languages."""

from __future__ import annotations

import argparse
from pathlib import Path

from schemas.json_schema import JSON_DIR, export, stale


def register(sub: argparse._SubParsersAction) -> None:
    """Add `tripscore schemas export`."""
    schemas = sub.add_parser("schemas", help="JSON Schema of the Kafka message contracts")
    commands = schemas.add_subparsers(dest="schemas_command", required=True)
    export_parser = commands.add_parser("export", help=f"write one .schema.json per message (default {JSON_DIR})")
    export_parser.add_argument("--out", type=Path, default=JSON_DIR, help="folder of the schema files")
    export_parser.add_argument("--check", action="store_true",
                               help="write nothing; exit 1 when a file is missing or differs from the contract")
    export_parser.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Write the schemas, or with `--check` report the stale ones."""
    if args.check:
        outdated = stale(args.out)
        for path in outdated:
            print(f"stale: {path} (run `tripscore schemas export`)")
        if not outdated:
            print(f"schemas in {args.out} match the contracts")
        return 1 if outdated else 0
    for path in export(args.out):
        print(f"wrote {path}")
    return 0
