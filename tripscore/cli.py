"""The `tripscore` command: each stage module contributes its subcommands through `register()`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from runtime.config import SettingsError, load_settings
from runtime.kafka_clients import KafkaAccessError
from runtime.log_limits import quiet_slow_steps
from tripscore import __version__

# Modules that expose `register(subparsers)`; each adds its subcommands with `set_defaults(func=...)`.
COMMAND_MODULES = (
    "tripscore.kafka_cli",
    "scorer.cli",
    "tripscore.store_cli",
    "tripscore.schemas_cli",
    "streaming.cli",
    "batch.cli",
    "modelregistry.cli",
    "batch.consistency",
    "tripscore.demo",
)

NOISY_LOGGERS = ("kafka", "aiokafka", "py4j")
WIRE_LOGGERS = ("kafka.protocol", "kafka.net.connection", "aiokafka.conn")
"""Request dumps of the Kafka clients: at DEBUG they print SASL tokens (a PLAIN password in clear), never shown."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every stage's subcommands (their modules import Spark, pyarrow's datasets and
    the batch jobs only when a command runs, so `score` starts without them)."""
    parser = argparse.ArgumentParser(prog="tripscore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tripscore {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and Spark's and the JVM's logs on the terminal (TRIPSCORE_VERBOSE=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def configure_logging(verbose: bool) -> None:
    """Log lines with time, level and logger; `verbose` is debug logging, else info (chatty clients: warnings, and
    not kafka-python's slow IO-loop steps under a second)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in NOISY_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)
    for wire in WIRE_LOGGERS:
        logging.getLogger(wire).setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        quiet_slow_steps()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ["TRIPSCORE_VERBOSE"] = "1"  # read by the settings of this process and of its children
    verbose = False
    try:
        verbose = load_settings().verbose
        configure_logging(verbose)
        return int(args.func(args) or 0)
    except (KafkaAccessError, SettingsError) as exc:
        print(f"tripscore {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if "pyspark" not in sys.modules or verbose:  # only a command that started Spark can fail in Spark
            raise
        from runtime.spark import describe_spark_error

        line = describe_spark_error(exc)
        if line is None:
            raise
        print(f"tripscore {args.command}: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
