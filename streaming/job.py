"""The Structured Streaming query: Kafka `trip-events` → per-partition update of the drivers' store records
(`streaming.update`, on the executors) → `foreachBatch` of the partitions' counts. Spark keeps only offsets: the
store records are the drivers' state."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from py4j.protocol import Py4JError
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from featurestore import open_store, store_settings
from runtime.config import ENV_PREFIX, Settings, out_of_range
from runtime.kafka_clients import spark_kafka_options
from runtime.retry import gave_up_in
from runtime.spark import spark_session
from streaming.metrics import StreamMetrics
from streaming.parse import RAW_COLUMNS
from streaming.sink import BatchSink, StatsSink
from streaming.source_lag import SourceLag, checkpoint_offsets
from streaming.update import STATS_DDL, update_partitions
from streaming.upgrade import retire_spark_state

log = logging.getLogger(__name__)
POLL_S = 0.5
STOP_GRACE_S = 5.0
"""On SIGTERM a running batch gets this long to finish; after that it is interrupted (and replayed on restart)."""
FETCH_MAX_WAIT_MS = 50
"""The Kafka source's `fetch.max.wait.ms` (Kafka's default 500): a task's consumer leaves a fetch waiting at the end
of the log, and the next task's fetch waits for it; with the default, the first batch after a pause in the events
took 0.5 s longer per partition read."""
LAUNCH_CONF = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}
"""For a JVM the job launches itself: C1 only. Spark's per-batch and per-task code runs a few times a batch, and
C2's compiling of it on 2 cores cost more than it saved (streaming/README.md, Levers measured)."""


class BadOption(ValueError):
    """An option out of range, naming its flag and setting."""


OPTION_SETTINGS = {"max_offsets_per_trigger": "stream_max_offsets", "trigger_ms": "stream_trigger_ms",
                   "lateness_s": "stream_lateness_s", "partitions": "stream_partitions",
                   "metrics_port": "stream_metrics_port"}
"""The options a flag sets (`--max-offsets-per-trigger`...) and the setting each defaults to, whose range it has."""


@dataclass(frozen=True)
class StreamOptions:
    """Tunables of one streaming run (defaults from `Settings`, overridden by flags)."""

    topic: str
    checkpoint: Path
    starting_offsets: str
    max_offsets_per_trigger: int
    trigger_ms: int
    available_now: bool
    lateness_s: float  # a driver's events are final once this far behind its latest (`driver_state`)
    partitions: int
    metrics_port: int
    spark_conf: tuple[tuple[str, str], ...] = ()  # Spark settings over `stream_conf` (`--conf key=value`)

    def __post_init__(self) -> None:
        for name, setting in OPTION_SETTINGS.items():
            if (problem := out_of_range(setting, getattr(self, name))) is not None:
                raise BadOption(f"--{name.replace('_', '-')} ({ENV_PREFIX}{setting.upper()}) {problem}")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> StreamOptions:
        """Options from settings; `None` overrides (unset flags) are ignored."""
        options = {
            "topic": settings.topic_trip_events,
            "checkpoint": Path(settings.stream_checkpoint or settings.home / "checkpoints" / "stream"),
            "starting_offsets": settings.stream_starting_offsets,
            "max_offsets_per_trigger": settings.stream_max_offsets,
            "trigger_ms": settings.stream_trigger_ms,
            "available_now": False,
            "lateness_s": settings.stream_lateness_s,
            "partitions": settings.stream_partitions,
            "metrics_port": settings.stream_metrics_port,
        }
        options.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**options)


def stream_conf(options: StreamOptions) -> dict[str, str]:
    """Spark SQL settings of the query, then `options.spark_conf`."""
    return {
        "spark.sql.execution.arrow.maxRecordsPerBatch": "20000",
        "spark.sql.session.timeZone": "UTC",
        **dict(options.spark_conf),
    }


def raw_stream(spark: SparkSession, settings: Settings, options: StreamOptions) -> DataFrame:
    """The Kafka source's records (`RAW_COLUMNS`), its partitions coalesced to `partitions` tasks."""
    return (
        spark.readStream.format("kafka")
        .options(**spark_kafka_options(settings))
        .option("subscribe", options.topic)
        .option("startingOffsets", options.starting_offsets)
        .option("maxOffsetsPerTrigger", options.max_offsets_per_trigger)
        .option("kafka.fetch.max.wait.ms", FETCH_MAX_WAIT_MS)
        .load()
        .select(*RAW_COLUMNS)
        .coalesce(options.partitions)
    )


def build_stream(spark: SparkSession, settings: Settings, options: StreamOptions) -> DataFrame:
    """The streaming DataFrame of each partition's update counts (`update.STATS_DDL`); the update writes the store."""
    update = update_partitions(store_settings(settings), options.topic, round(options.lateness_s * 1000))
    return raw_stream(spark, settings, options).mapInArrow(update, STATS_DDL)


def job_session(settings: Settings, options: StreamOptions, app_name: str) -> SparkSession:
    """The Spark session of a job process that runs the query: its own JVM with `LAUNCH_CONF` and `stream_conf`."""
    return spark_session(settings, app_name, **{**LAUNCH_CONF, **stream_conf(options)})


def stream_session(spark: SparkSession, options: StreamOptions) -> SparkSession:
    """A session of its own for the query (sharing the SparkContext), with the SQL settings of `stream_conf`;
    the others (the JVM's and Python workers', e.g. `spark.python.*`) apply only at launch (`job_session`)."""
    session = spark.newSession()
    for key, value in stream_conf(options).items():
        if session.conf.isModifiable(key):
            session.conf.set(key, value)
        elif session.conf.get(key, None) != value:
            log.warning("Spark setting %s=%s ignored: it applies only when the job launches its JVM", key, value)
    return session


def start(frame: DataFrame, options: StreamOptions, sink: BatchSink) -> StreamingQuery:
    """Start the query of `frame`, writing each micro-batch through `sink`."""
    options.checkpoint.mkdir(parents=True, exist_ok=True)
    writer = (
        frame.writeStream.outputMode("append")
        .foreachBatch(sink)
        .option("checkpointLocation", str(options.checkpoint.resolve()))
        .queryName(f"tripscore-stream-{options.topic}")
    )
    if options.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{options.trigger_ms} milliseconds")
    return writer.start()


def stop_between_batches(query: StreamingQuery, timeout_s: float = STOP_GRACE_S) -> None:
    """Stop the query once no batch is running, or after `timeout_s` (the batch is interrupted, and replayed on
    restart: one INFO line says so)."""
    deadline = time.monotonic() + timeout_s
    while (running := query.isActive and query.status["isTriggerActive"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    if running:
        log.info("the batch in flight was interrupted by the stop; it will be replayed on restart")
    query.stop()


def report_progress(query: StreamingQuery, metrics: StreamMetrics, seen: int) -> int:
    """Hand the metrics the progress of every batch completed after batch `seen`; returns the last one handed.

    Polled as JSON between batches: a Python `StreamingQueryListener` made the JVM resolve each report field by
    field over Py4J, a third of the JVM's CPU samples at 5,000 events/s (streaming/README.md)."""
    last = query.lastProgress
    if last is None or last["batchId"] <= seen:
        return seen
    for progress in [last] if last["batchId"] == seen + 1 else query.recentProgress:
        if progress["batchId"] > seen:
            metrics.observe_progress(progress)
            seen = progress["batchId"]
    return seen


def run(spark: SparkSession, settings: Settings, options: StreamOptions,
        stop: threading.Event | None = None) -> StreamMetrics:
    """Run until the query ends (AvailableNow) or `stop` is set; raises the query's failure (`GaveUp` when a
    dependency stayed down past the give-up time)."""
    settings = store_settings(settings)  # the executors open the store too
    open_store(settings)  # fail fast, and create a new SQLite file before executors race to
    retire_spark_state(options.checkpoint)
    lag = SourceLag(settings, options.topic, checkpoint_offsets(options.checkpoint, options.topic))
    metrics = StreamMetrics(options.metrics_port, settings.web_bind, lag if options.metrics_port else None)
    sink = StatsSink(metrics.observe_sink)
    session = stream_session(spark, options)
    log.info("streaming %s → %s store, checkpoint %s", options.topic, settings.store, options.checkpoint)
    return drive(build_stream(session, settings, options), options, sink, metrics, stop)


def drive(frame: DataFrame, options: StreamOptions, sink: BatchSink, metrics: StreamMetrics,
          stop: threading.Event | None = None) -> StreamMetrics:
    """Run the query of `frame` into `sink` until it ends or `stop` is set, reporting progress to `metrics`."""
    query = start(frame, options, sink)
    sink.query = query
    seen = -1
    try:
        while not query.awaitTermination(POLL_S):
            seen = report_progress(query, metrics, seen)
            if stop is not None and stop.is_set():
                log.info("stopping after the current batch (at most %.0f s)", STOP_GRACE_S)
                stop_between_batches(query)
        report_progress(query, metrics, seen)
    except (StreamingQueryException, Py4JError, ConnectionError) as exc:
        if stop is not None and stop.is_set():  # the JVM went first (a signal to every process of the service)
            log.info("Spark stopped with the service; a batch in flight will be replayed on restart")
            return metrics
        if gave_up := gave_up_in(exc):  # in the sink or on an executor: one clear line, not Spark's traceback
            raise gave_up from None
        raise
    finally:
        with contextlib.suppress(Py4JError, ConnectionError):  # a JVM gone already has no query to stop
            if query.isActive:
                query.stop()
        sink.close()
        metrics.close()
    return metrics
