"""The SparkSession factory: `local[*]` with the Kafka connector and small-machine settings."""

from __future__ import annotations

import logging
import os
import sys

from pyspark import SparkContext
from pyspark.sql import SparkSession

from runtime.config import Settings
from runtime.jars import jar_files

log = logging.getLogger(__name__)

KAFKA_PROVIDER = "org.apache.spark.sql.kafka010.KafkaSourceProvider"


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


def spark_session(settings: Settings, app_name: str, **conf: str) -> SparkSession:
    """A SparkSession (created or reused); the master comes from settings unless spark-submit set one.

    Pass Spark keys with dots through a dict: `spark_session(s, "job", **{"spark.ui.enabled": "true"})`.
    """
    builder = SparkSession.builder.appName(app_name)
    if not _jvm_running():
        _local_launch_env(settings)
        builder = builder.master(settings.spark_master).config("spark.jars", ",".join(map(str, jar_files("spark"))))
    for key, value in {**default_conf(settings), **conf}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    _ensure_connector(session)
    return session
