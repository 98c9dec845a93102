"""The Structured Streaming query: Kafka `trip-events` → parse → per-driver state → foreachBatch into the store."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from featurestore import open_store
from runtime.config import ENV_PREFIX, Settings, out_of_range
from runtime.kafka_clients import spark_kafka_options
from runtime.retry import Interrupted, gave_up_in
from runtime.spark import spark_session
from streaming.checkpoint import state_buckets
from streaming.metrics import StreamMetrics
from streaming.parse import PARSED_SCHEMA, RAW_COLUMNS, parse_batches
from streaming.sink import BatchSink, Sink
from streaming.stateful import OUTPUT_SCHEMA, BucketProcessor

log = logging.getLogger(__name__)
ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
POLL_S = 0.5
STOP_GRACE_S = 2.0
"""On SIGTERM a running batch gets this long to finish; after that it is interrupted (and replayed on restart)."""
EVENT_TIME = "event_time"
"""The watermarked timestamp column (event time, UTC), dropped before the state operator: `transformWithState`
filters out input older than the watermark when it sees the column, and our late-event policy
(`driver_state.py`) must see every event. The update function reads the time packed in `event`."""
FETCH_MAX_WAIT_MS = 50
"""The Kafka source's `fetch.max.wait.ms` (Kafka's default 500): a task's consumer leaves a fetch waiting at the end
of the log, and the next task's fetch waits for it; with the default, the first batch after a pause in the events
took 0.5 s longer per partition read."""
LAUNCH_CONF = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}
"""For a JVM the job launches itself: C1 only. Spark's per-batch and per-task code runs a few times a batch, and
C2's compiling of it on 2 cores cost more than it saved (lag ratio at 5,000 events/s: 1.92–2.04 with C2, 1.42 with
C1 only; streaming/README.md, Levers measured)."""


class BadOption(ValueError):
    """An option out of range, naming its flag and setting."""


OPTION_SETTINGS = {"max_offsets_per_trigger": "stream_max_offsets", "trigger_ms": "stream_trigger_ms",
                    "watermark_s": "stream_watermark_s", "partitions": "stream_partitions",
                    "state_buckets": "stream_state_buckets", "state_idle_s": "stream_state_idle_s",
                    "write_batch": "stream_write_batch", "metrics_port": "stream_metrics_port"}
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
    watermark_s: float
    partitions: int
    state_buckets: int | None  # None until `with_layout`: the checkpoint's count, or the default for a new one
    state_idle_s: float  # a driver's state is dropped once its latest event is this far behind the watermark
    write_batch: int
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
            "watermark_s": settings.stream_watermark_s,
            "partitions": settings.stream_partitions,
            "state_buckets": settings.stream_state_buckets,
            "state_idle_s": settings.stream_state_idle_s,
            "write_batch": settings.stream_write_batch,
            "metrics_port": settings.stream_metrics_port,
        }
        options.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**options)


def stream_conf(options: StreamOptions) -> dict[str, str]:
    """Spark SQL settings of the query, then `options.spark_conf`; state partitioning and provider are fixed by
    the first checkpoint."""
    return {
        "spark.sql.shuffle.partitions": str(options.partitions),
        "spark.sql.streaming.stateStore.providerClass": ROCKSDB,
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "20000",
        # No batch only to move the watermark: no timers, nothing to evict, and each costs the fixed ~1 s
        "spark.sql.streaming.noDataMicroBatches.enabled": "false",
        "spark.sql.session.timeZone": "UTC",  # event times reach the update function as naive UTC
        **dict(options.spark_conf),
    }


def with_layout(options: StreamOptions) -> StreamOptions:
    """`options` with the bucket count of their checkpoint (`checkpoint.state_buckets`), recorded in a new one."""
    return dataclasses.replace(options, state_buckets=state_buckets(options.checkpoint, options.state_buckets))


def parsed_stream(spark: SparkSession, settings: Settings, options: StreamOptions) -> DataFrame:
    """Stage 1 on the Kafka source: every record decoded and validated (`PARSED_SCHEMA`) in `partitions` tasks."""
    raw = (
        spark.readStream.format("kafka")
        .options(**spark_kafka_options(settings))
        .option("subscribe", options.topic)
        .option("startingOffsets", options.starting_offsets)
        .option("maxOffsetsPerTrigger", options.max_offsets_per_trigger)
        .option("kafka.fetch.max.wait.ms", FETCH_MAX_WAIT_MS)
        .load()
    )
    parse = functools.partial(parse_batches, buckets=options.state_buckets)
    return raw.select(*RAW_COLUMNS).coalesce(options.partitions).mapInArrow(parse, PARSED_SCHEMA)


def build_stream(spark: SparkSession, settings: Settings, options: StreamOptions) -> DataFrame:
    """The streaming DataFrame of per-driver outputs (records, dead letters, duplicate counts)."""
    watermarked = (
        parsed_stream(spark, settings, options).select(
            "bucket",
            F.timestamp_millis("ts_ms").alias(EVENT_TIME),  # capped at the clock by the parse stage
            "events")
        .withWatermark(EVENT_TIME, f"{int(options.watermark_s * 1000)} milliseconds")
        .drop(EVENT_TIME)  # the operator would drop rows older than the watermark unseen: the late policy is ours
    )
    processor = BucketProcessor(settings, options.topic, int(options.state_idle_s * 1000))
    return watermarked.groupBy("bucket").transformWithState(processor, OUTPUT_SCHEMA, "Update", "EventTime")


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
        frame.writeStream.outputMode("update")
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
    """Stop the query once no batch is running (or after `timeout_s`; an interrupted batch is replayed)."""
    deadline = time.monotonic() + timeout_s
    while query.isActive and query.status["isTriggerActive"] and time.monotonic() < deadline:
        time.sleep(0.02)
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
    settings = settings.with_overrides(sqlite_path=settings.sqlite_file.resolve())  # executors open it too
    open_store(settings)  # fail fast, and create a new SQLite file before executors race to
    options = with_layout(options)
    metrics = StreamMetrics(options.metrics_port, settings.web_bind)
    sink = Sink(settings, options.write_batch, metrics.observe_sink, stop)
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
                log.info("stopping after the current batch")
                stop_between_batches(query)
        report_progress(query, metrics, seen)
    except StreamingQueryException as exc:
        if isinstance(sink.failure, Interrupted):  # a shutdown cut a retrying batch short: it is replayed later
            return metrics
        if gave_up := gave_up_in(exc):  # in the sink or on an executor: one clear line, not Spark's traceback
            raise gave_up from None
        raise
    finally:
        if query.isActive:
            query.stop()
        sink.close()
        metrics.close()
    return metrics
