"""A local KRaft Kafka broker (broker + controller) run from the Maven jars in `jars/kafka/`, or a cluster of them."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka.errors import KafkaError

from runtime import kafka_secure
from runtime.config import Settings
from runtime.jars import jar_files
from runtime.topics import admin_client, broker_ready, min_insync_replicas

log = logging.getLogger(__name__)

KAFKA_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
JVM_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]
LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log_file}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


@dataclass(frozen=True)
class BrokerPaths:
    """Files of the local broker under `<home>/kafka/`."""

    root: Path

    @classmethod
    def of(cls, settings: Settings) -> BrokerPaths:
        return cls(settings.home.resolve() / "kafka")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.root / "log4j.properties"

    @property
    def pidfile(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def console(self) -> Path:
        return self.logs / "console.out"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"


def listen_address(settings: Settings) -> tuple[str, int]:
    """Host and port of the local broker: the first `kafka_bootstrap` entry, which must be local."""
    first = settings.kafka_bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host not in LOCAL_HOSTS:
        raise ValueError(f"TRIPSCORE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} is not local; "
                         "the local broker only listens on 127.0.0.1/localhost")
    return ("127.0.0.1" if host == "localhost" else host), int(port)


def server_properties(settings: Settings, paths: BrokerPaths, controller_port: int, secure: bool = False) -> str:
    """The broker's server.properties: combined broker+controller, single-replica, small-machine sizes; `secure`
    makes the client listener SASL_SSL (`runtime.kafka_secure`)."""
    host, port = listen_address(settings)
    listener = kafka_secure.LISTENER if secure else "PLAINTEXT"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"{listener}://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"{listener}://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
        "log.dirs": str(paths.data),
        "num.partitions": str(settings.kafka_partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "168",
        "log.segment.bytes": str(256 * 1024 * 1024),
    }
    if secure:
        props.update(kafka_secure.broker_properties(settings, paths.root))
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, never starting with `-` (the storage
    tool would read it as an option; Kafka's own `Uuid.randomUuid` skips those too)."""
    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"):
        pass
    return cluster_id


def _java(main: str, *args: str, paths: BrokerPaths) -> list[str]:
    classpath = os.pathsep.join(str(j) for j in jar_files("kafka"))
    return ["java", *JVM_OPTS, f"-Dlog4j.configuration=file:{paths.log4j}", "-cp", classpath, main, *args]


def _write_config(settings: Settings, paths: BrokerPaths, controller_port: int, secure: bool) -> None:
    for folder in (paths.data, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    if secure:
        kafka_secure.make_certificates(paths.root, listen_address(settings)[0])
    paths.config.touch()
    paths.config.chmod(0o600)  # a secure broker's holds its SASL password
    paths.config.write_text(server_properties(settings, paths, controller_port, secure))
    paths.log4j.write_text(LOG4J.format(log_file=paths.server_log))


def _format_storage(paths: BrokerPaths, extra_args: list[str], cluster_id: str | None = None) -> None:
    """Format the KRaft log dir on first start (a no-op when `meta.properties` exists); nodes of one cluster share
    `cluster_id`."""
    if (paths.data / "meta.properties").exists():
        return
    cmd = _java(STORAGE_TOOL, "format", "-t", cluster_id or _cluster_id(), "-c", str(paths.config),
                "--ignore-formatted", *extra_args, paths=paths)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"formatting {paths.data} failed (exit {done.returncode}):\n{output}")


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """True while `pid` runs; reaps it first when it is our own exited child, zombies count as gone."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_broker(pid: int, paths: BrokerPaths) -> bool:
    argv = _argv(pid)
    return KAFKA_MAIN in argv and str(paths.config) in argv


def running_pid(settings: Settings) -> int | None:
    """Pid of the local broker of these settings, from the pidfile or else `/proc`; None when not running."""
    return _running_pid_at(BrokerPaths.of(settings))


def _running_pid_at(paths: BrokerPaths) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(paths.pidfile.read_text().strip())
        if _alive(pid) and _is_our_broker(pid, paths):
            return pid
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        if pid != os.getpid() and _is_our_broker(pid, paths) and _alive(pid):
            return pid
    return None


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _log_tail(paths: BrokerPaths, lines: int = 30) -> str:
    chunks = []
    for path in (paths.console, paths.server_log):
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(chunks) or "(no broker log written)"


def up(settings: Settings, controller_port: int | None = None, timeout: float = 60.0, secure: bool = False) -> int:
    """Start the broker unless it runs; returns its pid once it accepts clients, or raises `RuntimeError`.

    `secure`: its one client listener is SASL_SSL, for the settings' SASL user (`runtime.kafka_secure`)."""
    paths = BrokerPaths.of(settings)
    if secure:
        kafka_secure.check_settings(settings)
    if (pid := running_pid(settings)) is not None:
        log.info("Kafka broker already running (pid %d) at %s", pid, settings.kafka_bootstrap)
        return pid
    host, port = listen_address(settings)
    controller_port = controller_port or port + 1
    for p in (port, controller_port):
        if _port_in_use(host, p):
            raise RuntimeError(f"{host}:{p} is already taken by another process; stop it or change "
                               "TRIPSCORE_KAFKA_BOOTSTRAP / --controller-port")
    _write_config(settings, paths, controller_port, secure)
    _format_storage(paths, kafka_secure.format_arguments(settings) if secure else [])
    client = settings.with_overrides(kafka_ssl_cafile=str(kafka_secure.ca_file(paths.root))) if secure else settings
    proc = _launch(paths)
    deadline = time.monotonic() + timeout
    while not broker_ready(client):
        exited = proc.poll() is not None
        if exited or time.monotonic() >= deadline:
            reason = f"exited with code {proc.returncode}" if exited else f"not ready in {timeout:.0f} s"
            stop(settings)
            raise RuntimeError(f"Kafka broker {reason}\n{_log_tail(paths)}")
        time.sleep(0.5)
    log.info("Kafka broker up (pid %d) at %s, data in %s", proc.pid, settings.kafka_bootstrap, paths.data)
    return proc.pid


def _launch(paths: BrokerPaths) -> subprocess.Popen:
    """Start the broker JVM of `paths` in its own session, output to its console log, pid in its pidfile."""
    with paths.console.open("ab") as console:
        proc = subprocess.Popen(_java(KAFKA_MAIN, str(paths.config), paths=paths), stdin=subprocess.DEVNULL,
                                stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
    paths.pidfile.write_text(f"{proc.pid}\n")
    return proc


def stop(settings: Settings, timeout: float = 30.0) -> bool:
    """Stop the broker (SIGTERM, then SIGKILL after `timeout` s); False when none was running."""
    paths = BrokerPaths.of(settings)
    pid = running_pid(settings)
    if pid is not None:
        _terminate([pid], timeout)
    paths.pidfile.unlink(missing_ok=True)
    return pid is not None


def _terminate(pids: list[int], timeout: float) -> None:
    """SIGTERM every broker at once (a cluster keeps its quorum while they shut down), SIGKILL the stragglers."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in filter(_alive, pids):
        log.warning("Kafka broker (pid %d) ignored SIGTERM for %.0f s; killing it", pid, timeout)
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


# A local cluster: node i (1-based) of `kafka up --brokers N` listens on bootstrap port + 2(i-1), its controller on
# the port after that; every node is a combined broker+controller and data lives in `<home>/kafka/node-<i>/`.


def cluster_node_paths(settings: Settings, node: int) -> BrokerPaths:
    """Files of cluster node `node` (1-based)."""
    return BrokerPaths(BrokerPaths.of(settings).root / f"node-{node}")


def cluster_ports(settings: Settings, brokers: int) -> list[tuple[int, int]]:
    """(broker port, controller port) of each node, from the first bootstrap entry's port upwards."""
    _, port = listen_address(settings)
    return [(port + 2 * i, port + 2 * i + 1) for i in range(brokers)]


def cluster_bootstrap(settings: Settings, brokers: int) -> str:
    """The bootstrap list naming every node of the local cluster."""
    host, _ = listen_address(settings)
    return ",".join(f"{host}:{broker_port}" for broker_port, _ in cluster_ports(settings, brokers))


def cluster_nodes(settings: Settings) -> dict[int, int | None]:
    """Every node of the local cluster found on disk, with its pid (None when it is not running)."""
    root = BrokerPaths.of(settings).root
    nodes = sorted(int(p.name.removeprefix("node-")) for p in root.glob("node-[0-9]*") if p.is_dir())
    return {node: _running_pid_at(cluster_node_paths(settings, node)) for node in nodes}


def _node_properties(settings: Settings, node: int, brokers: int) -> dict[str, str]:
    """What a cluster node changes in the single-broker config: its id, the quorum, replicated topics."""
    host, _ = listen_address(settings)
    ports = cluster_ports(settings, brokers)
    voters = ",".join(f"{i}@{host}:{controller}" for i, (_, controller) in enumerate(ports, 1))
    isr = str(min_insync_replicas(brokers))
    return {
        "node.id": str(node),
        "controller.quorum.voters": voters,
        "default.replication.factor": str(brokers),
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": str(brokers),
        "transaction.state.log.replication.factor": str(brokers),
        "transaction.state.log.min.isr": isr,
    }


def _write_node_config(settings: Settings, node: int, brokers: int) -> BrokerPaths:
    """The node's server.properties: the single-broker config on the node's ports, with the cluster's changes."""
    host, _ = listen_address(settings)
    broker_port, controller_port = cluster_ports(settings, brokers)[node - 1]
    paths = cluster_node_paths(settings, node)
    _write_config(settings.with_overrides(kafka_bootstrap=f"{host}:{broker_port}"), paths, controller_port, False)
    props = dict(line.split("=", 1) for line in paths.config.read_text().splitlines() if "=" in line)
    props.update(_node_properties(settings, node, brokers))
    paths.config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return paths


def _existing_cluster_id(settings: Settings) -> str | None:
    """The cluster id a formatted node already carries, so restarted and new nodes join the same cluster."""
    for meta in sorted(BrokerPaths.of(settings).root.glob("node-*/data/meta.properties")):
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.partition("=")[2].strip()
    return None


def _registered_brokers(settings: Settings, bootstrap: str) -> int:
    """How many brokers the cluster lists, once every node of `bootstrap` accepts connections; 0 before."""
    servers = [server.rpartition(":") for server in bootstrap.split(",")]
    if not all(_port_in_use(host, int(port)) for host, _, port in servers):
        return 0
    try:
        with admin_client(settings.with_overrides(kafka_bootstrap=bootstrap), timeout_s=2.0) as admin:
            return len(admin.describe_cluster()["brokers"])
    except (KafkaError, OSError):
        return 0


def cluster_up(settings: Settings, brokers: int, timeout: float = 120.0) -> list[int]:
    """Start the nodes of a local `brokers`-node cluster that do not run; returns their pids once every broker
    is registered, or raises `RuntimeError` (the nodes started here are stopped again)."""
    if brokers < 2:
        raise ValueError("a cluster needs at least 2 brokers; `kafka up` without --brokers starts a single one")
    host, _ = listen_address(settings)
    running = cluster_nodes(settings)
    cluster_id = _existing_cluster_id(settings) or _cluster_id()
    started: dict[int, subprocess.Popen] = {}
    for node, (broker_port, controller_port) in enumerate(cluster_ports(settings, brokers), 1):
        if running.get(node) is not None:
            continue
        for port in (broker_port, controller_port):
            if _port_in_use(host, port):
                _terminate([proc.pid for proc in started.values()], 30)
                raise RuntimeError(f"{host}:{port} (node {node}) is already taken by another process")
        paths = _write_node_config(settings, node, brokers)
        _format_storage(paths, [], cluster_id)
        started[node] = _launch(paths)
    bootstrap = cluster_bootstrap(settings, brokers)
    deadline = time.monotonic() + timeout
    while _registered_brokers(settings, bootstrap) < brokers:
        exited = [node for node, proc in started.items() if proc.poll() is not None]
        if exited or time.monotonic() >= deadline:
            reason = f"node {exited[0]} exited" if exited else f"not all {brokers} brokers up in {timeout:.0f} s"
            tails = "\n".join(_log_tail(cluster_node_paths(settings, node), 15) for node in started)
            _terminate([proc.pid for proc in started.values() if proc.poll() is None], 30)
            raise RuntimeError(f"Kafka cluster: {reason}\n{tails}")
        time.sleep(0.5)
    log.info("Kafka cluster of %d brokers up at %s", brokers, bootstrap)
    return [pid for pid in cluster_nodes(settings).values() if pid is not None]


def cluster_stop(settings: Settings, timeout: float = 30.0) -> int:
    """Stop every running node of the local cluster at once; returns how many ran."""
    nodes = {node: pid for node, pid in cluster_nodes(settings).items() if pid is not None}
    if nodes:
        _terminate(list(nodes.values()), timeout)
    for node in cluster_nodes(settings):
        cluster_node_paths(settings, node).pidfile.unlink(missing_ok=True)
    return len(nodes)
