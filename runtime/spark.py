"""The SparkSession factory: `local[*]` with the Kafka connector and small-machine settings.

A JVM launched here writes its output and Spark's logs to `<home>/logs/spark-<app>.log`, not the terminal
(`tripscore -v`, i.e. `TRIPSCORE_VERBOSE=1`, shows them there at INFO).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

from runtime.config import Settings
from runtime.jars import jar_files

log = logging.getLogger(__name__)

KAFKA_PROVIDER = "org.apache.spark.sql.kafka010.KafkaSourceProvider"
JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# Spark's logs on the JVM's stderr, which is the log file unless verbose; the level is set per session
LOG4J2_PROPERTIES = """\
# Written by tripscore (runtime/spark.py) for the driver JVMs it launches.
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %p %c{1}: %m%n%ex
"""
_log_path: Path | None = None  # where the JVM this process launched writes its output
REDACTION = r"(?i)secret|password|token|access[.]?key|keystore[.]key"
"""Spark's default redaction pattern plus the Kafka connector's client key (`kafka.ssl.keystore.key`, a PEM)."""


def _jvm_running() -> bool:
    """True inside `spark-submit` (its JVM hands pyspark a gateway) or once this process has a SparkContext."""
    return "PYSPARK_GATEWAY_PORT" in os.environ or SparkContext._active_spark_context is not None


def default_conf(settings: Settings) -> dict[str, str]:
    """Settings every tripscore Spark job starts from; keyword conf of `spark_session` overrides them."""
    return {
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "4",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "2g",
        "spark.sql.warehouse.dir": str((settings.home / "spark" / "warehouse").resolve()),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
        "spark.redaction.regex": REDACTION,
    }


def _local_launch_env(settings: Settings) -> None:
    """Environment for a JVM this process launches: scratch under `<home>/spark`, workers on this Python."""
    os.environ.setdefault("SPARK_LOCAL_DIRS", str((settings.home / "spark" / "tmp").resolve()))
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if settings.spark_master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def _ensure_connector(session: SparkSession) -> None:
    """Under spark-submit without `--jars`, add the connector as spark-submit would: driver loader + executors."""
    jvm = session._jvm
    if jvm.org.apache.spark.util.Utils.classIsLoadable(KAFKA_PROVIDER):
        return
    try:
        jars = jar_files("spark")
    except FileNotFoundError as exc:
        log.warning("Kafka connector not on the driver classpath (pass --jars): %s", exc)
        return
    loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    if loader.getClass().getName() != "org.apache.spark.util.MutableURLClassLoader":
        log.warning("Kafka connector not on the driver classpath; pass --jars %s", ",".join(map(str, jars)))
        return
    for jar in jars:
        loader.addURL(jvm.java.io.File(str(jar)).toURI().toURL())
        session.sparkContext._jsc.addJar(str(jar))


def spark_log_path(settings: Settings, app_name: str) -> Path:
    """The file a JVM launched for `app_name` writes its output and Spark's logs to."""
    return (settings.home / "logs" / f"spark-{app_name}.log").resolve()


def _log4j2_file(settings: Settings) -> Path:
    """The log4j2 configuration of launched JVMs, written atomically (processes may launch at once)."""
    path = (settings.home / "spark" / "log4j2.properties").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != LOG4J2_PROPERTIES:
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        partial.write_text(LOG4J2_PROPERTIES)
        partial.replace(path)
    return path


def _own_log4j2(java_options: str) -> bool:
    """Whether the user configures log4j2 (a `log4j2.properties` in SPARK_CONF_DIR, or a JVM option): theirs wins."""
    conf_dir = os.environ.get("SPARK_CONF_DIR")
    in_conf_dir = bool(conf_dir) and Path(conf_dir, "log4j2.properties").is_file()
    return in_conf_dir or "-Dlog4j2.configurationFile=" in java_options


def _launch_jvm(settings: Settings, conf: SparkConf, app_name: str) -> None:
    """Start the driver JVM and its SparkContext; its output goes to the log file unless verbose.

    The JVM (and the Python workers it starts) gets a session of its own: a signal to the command's process group
    (Ctrl-C, `kill -- -PGID`) reaches only this process, which stops Spark in order; the JVM exits when this process
    does (its stdin closes)."""
    global _log_path
    java_options = conf.get(JAVA_OPTIONS, "")
    if not _own_log4j2(java_options):
        conf.set(JAVA_OPTIONS, f"-Dlog4j2.configurationFile={_log4j2_file(settings)} {java_options}".strip())
    if settings.verbose:
        SparkContext(conf=conf, gateway=launch_gateway(conf, popen_kwargs={"start_new_session": True}))
        return
    _log_path = spark_log_path(settings, app_name)
    _log_path.parent.mkdir(parents=True, exist_ok=True)
    with _log_path.open("ab") as output:  # the child keeps its own copy of the descriptor
        gateway = launch_gateway(conf, popen_kwargs={"stdout": output, "stderr": output, "start_new_session": True})
    SparkContext(conf=conf, gateway=gateway)
    log.info("Spark and JVM logs: %s (tripscore -v shows them here)", _log_path)


def spark_session(settings: Settings, app_name: str, **conf: str) -> SparkSession:
    """A SparkSession (created or reused); the master comes from settings unless spark-submit set one.

    Pass Spark keys with dots through a dict: `spark_session(s, "job", **{"spark.ui.enabled": "true"})`.
    """
    spark_conf = SparkConf().setAppName(app_name).setAll(list({**default_conf(settings), **conf}.items()))
    if not _jvm_running():
        _local_launch_env(settings)
        spark_conf.setMaster(settings.spark_master).set("spark.jars", ",".join(map(str, jar_files("spark"))))
        _launch_jvm(settings, spark_conf, app_name)
    session = SparkSession.builder.config(conf=spark_conf).getOrCreate()
    session.sparkContext.setLogLevel("INFO" if settings.verbose else "WARN")
    _ensure_connector(session)
    return session


def describe_spark_error(exc: BaseException) -> str | None:
    """One line for an error raised by Spark or its JVM (its traceback goes to the JVM log), None for others."""
    from py4j.protocol import Py4JError, Py4JJavaError
    from pyspark.errors import PySparkException

    if not isinstance(exc, PySparkException | Py4JError):
        return None
    if isinstance(exc, Py4JJavaError):
        detail = str(exc.java_exception.toString())
    else:
        detail = str(exc)
    line = next((text.strip() for text in detail.splitlines() if text.strip()), type(exc).__name__)
    if _log_path is None:
        return f"Spark failed: {line}"
    with _log_path.open("a") as output:
        output.write("tripscore: the error as Python saw it\n" + "".join(traceback.format_exception(exc)))
    return f"Spark failed: {line} (details in {_log_path})"
