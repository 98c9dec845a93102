"""Subcommands `tripscore kafka up|down|status` (local broker or cluster) and `tripscore topics create`."""

from __future__ import annotations

import argparse
import logging

from runtime import kafka_local, kafka_secure
from runtime.config import Settings, load_settings
from runtime.kafka_clients import check_access
from runtime.topics import broker_ready, ensure_topics, spec_topics, topic_partitions


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `kafka` and `topics` command groups."""
    kafka = subparsers.add_parser("kafka", help="run the local KRaft broker (or a local cluster of them)")
    kafka_sub = kafka.add_subparsers(dest="kafka_command", required=True)
    up = kafka_sub.add_parser("up", help="start the broker and wait until it accepts clients")
    up.add_argument("--controller-port", type=int, help="KRaft controller port (default: broker port + 1)")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the broker (default 60)")
    up.add_argument("--secure", action="store_true",
                    help="serve SASL_SSL only: a throwaway CA and certificate, and the TRIPSCORE_KAFKA_SASL_* user")
    up.add_argument("--brokers", type=int, default=1,
                    help="nodes; more than 1 starts a local cluster on the bootstrap port and the ports after it, "
                         "two per node (default 1)")
    up.set_defaults(func=_up)
    down = kafka_sub.add_parser("down", help="stop the broker or every cluster node (SIGTERM, then SIGKILL)")
    down.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL (default 30)")
    down.set_defaults(func=_down)
    kafka_sub.add_parser("status", help="whether the broker runs, and its topics").set_defaults(func=_status)

    topics = subparsers.add_parser("topics", help="manage the topics of docs/spec.md")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True)
    create = topics_sub.add_parser("create", help="create the four topics of docs/spec.md if missing")
    create.add_argument("--partitions", type=int, help="partitions per topic (default TRIPSCORE_KAFKA_PARTITIONS)")
    create.add_argument("--replication-factor", type=int,
                        help="replicas per partition, with min.insync.replicas one less (default: the broker's)")
    create.set_defaults(func=_create)


def _settings(args: argparse.Namespace) -> Settings:
    """The settings; kafka-python's own connection chatter is only shown with `--verbose`."""
    if not getattr(args, "verbose", False):
        logging.getLogger("kafka").setLevel(logging.WARNING)
    return load_settings()


def _up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.brokers > 1:
        if args.secure:
            print("kafka up failed: --secure starts a single broker; it does not combine with --brokers")
            return 1
        return _cluster_up(settings, args)
    try:
        pid = kafka_local.up(settings, controller_port=args.controller_port, timeout=args.timeout,
                             secure=args.secure)
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        print(f"kafka up failed: {exc}")
        return 1
    print(f"Kafka broker running (pid {pid}) at {settings.kafka_bootstrap}")
    if args.secure:
        ca = kafka_secure.ca_file(kafka_local.BrokerPaths.of(settings).root)
        print(f"SASL_SSL only; clients trust its CA with TRIPSCORE_KAFKA_SSL_CAFILE={ca}")
    return 0


def _cluster_up(settings: Settings, args: argparse.Namespace) -> int:
    try:
        pids = kafka_local.cluster_up(settings, args.brokers, timeout=max(args.timeout, 120.0))
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        print(f"kafka up failed: {exc}")
        return 1
    bootstrap = kafka_local.cluster_bootstrap(settings, args.brokers)
    print(f"Kafka cluster of {args.brokers} brokers running (pids {', '.join(map(str, pids))}) at {bootstrap}")
    print(f"clients: TRIPSCORE_KAFKA_BOOTSTRAP={bootstrap}")
    return 0


def _down(args: argparse.Namespace) -> int:
    settings = _settings(args)
    stopped = kafka_local.stop(settings, timeout=args.timeout)
    nodes = kafka_local.cluster_stop(settings, timeout=args.timeout)
    if nodes:
        print(f"Kafka cluster stopped ({nodes} brokers)")
    if stopped or not nodes:
        print("Kafka broker stopped" if stopped else "Kafka broker was not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    pid = kafka_local.running_pid(settings)
    local = f"running (pid {pid})" if pid else "not running"
    print(f"local broker: {local}, data in {kafka_local.BrokerPaths.of(settings).root}")
    nodes = kafka_local.cluster_nodes(settings)
    if nodes:
        ports = kafka_local.cluster_ports(settings, len(nodes))
        for (node, node_pid), (broker_port, _) in zip(nodes.items(), ports, strict=True):
            print(f"  cluster node {node}: port {broker_port}, " + (f"running (pid {node_pid})" if node_pid
                                                                     else "not running"))
    check_access(settings)
    if not broker_ready(settings):
        print(f"bootstrap:    {settings.kafka_bootstrap} (no broker answers)")
        return 1
    print(f"bootstrap:    {settings.kafka_bootstrap} (reachable)")
    partitions = topic_partitions(settings)
    print(f"topics:       {len(partitions)}")
    for name, count in sorted(partitions.items()):
        print(f"  {name:<32} {count} partitions")
    missing = sorted(set(spec_topics(settings)) - set(partitions))
    if missing:
        print(f"missing topics: {', '.join(missing)} (run `tripscore topics create`)")
    return 0


def _create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    check_access(settings)
    created = ensure_topics(settings, partitions=args.partitions, replication_factor=args.replication_factor)
    present = len(spec_topics(settings)) - len(created)
    print(f"topics: {len(created)} created ({', '.join(created) or 'none'}), {present} already present")
    return 0
