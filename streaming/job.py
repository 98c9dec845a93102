"""The Structured Streaming query: Kafka `trip-events` → parse → per-driver state → foreachBatch into the store."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupStateTimeout

from streaming.metrics import StreamMetrics
from streaming.parse import PARSED_SCHEMA, RAW_COLUMNS, parse_frames
from streaming.sink import Sink
from streaming.stateful import EVENT_TIME, OUTPUT_SCHEMA, STATE_SCHEMA, update_function
from tripscore.config import Settings

log = logging.getLogger(__name__)
ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
POLL_S = 0.5


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
    shuffle_partitions: int
    write_batch: int
    metrics_port: int

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
            "shuffle_partitions": settings.stream_shuffle_partitions,
            "write_batch": settings.stream_write_batch,
            "metrics_port": settings.stream_metrics_port,
        }
        options.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**options)


def stream_conf(options: StreamOptions) -> dict[str, str]:
    """Spark SQL settings of the query; state partitioning and provider are fixed by the first checkpoint."""
    return {
        "spark.sql.shuffle.partitions": str(options.shuffle_partitions),
        "spark.sql.streaming.stateStore.providerClass": ROCKSDB,
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "20000",
        "spark.sql.session.timeZone": "UTC",  # event times reach the update function as naive UTC
    }


def build_stream(spark: SparkSession, settings: Settings, options: StreamOptions) -> DataFrame:
    """The streaming DataFrame of per-driver outputs (records, dead letters, duplicate counts)."""
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", options.topic)
        .option("startingOffsets", options.starting_offsets)
        .option("maxOffsetsPerTrigger", options.max_offsets_per_trigger)
        .load()
    )
    parsed = raw.select(*RAW_COLUMNS).mapInPandas(parse_frames, PARSED_SCHEMA)
    watermarked = (
        parsed.withColumn(EVENT_TIME, F.timestamp_millis("ts_ms")).drop("ts_ms")
        .withWatermark(EVENT_TIME, f"{int(options.watermark_s * 1000)} milliseconds")
    )
    return watermarked.groupBy("driver_id").applyInPandasWithState(
        update_function(settings, options.topic), OUTPUT_SCHEMA, STATE_SCHEMA, "Update", GroupStateTimeout.NoTimeout
    )


def start(spark: SparkSession, settings: Settings, options: StreamOptions, sink: Sink) -> StreamingQuery:
    """Start the query in a session of its own (for its SQL settings), writing through `sink`."""
    session = spark.newSession()
    for key, value in stream_conf(options).items():
        session.conf.set(key, value)
    options.checkpoint.mkdir(parents=True, exist_ok=True)
    writer = (
        build_stream(session, settings, options).writeStream.outputMode("update")
        .foreachBatch(sink)
        .option("checkpointLocation", str(options.checkpoint.resolve()))
        .queryName(f"tripscore-stream-{options.topic}")
    )
    if options.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{options.trigger_ms} milliseconds")
    query = writer.start()
    log.info("streaming %s → %s store, checkpoint %s", options.topic, settings.store, options.checkpoint)
    return query


def stop_between_batches(query: StreamingQuery, timeout_s: float = 60.0) -> None:
    """Stop the query once no batch is running (or after `timeout_s`; an interrupted batch is replayed)."""
    deadline = time.monotonic() + timeout_s
    while query.isActive and query.status["isTriggerActive"] and time.monotonic() < deadline:
        time.sleep(0.02)
    query.stop()


def run(spark: SparkSession, settings: Settings, options: StreamOptions,
        stop: threading.Event | None = None) -> StreamMetrics:
    """Run until the query ends (AvailableNow) or `stop` is set; raises the query's failure."""
    settings = settings.with_overrides(sqlite_path=settings.sqlite_file.resolve())  # executors open it too
    metrics = StreamMetrics(options.metrics_port)
    sink = Sink(settings, options.write_batch, metrics.observe_sink)
    query = start(spark, settings, options, sink)
    try:
        while not query.awaitTermination(POLL_S):
            metrics.observe_progress(query.recentProgress)
            if stop is not None and stop.is_set():
                log.info("stopping after the current batch")
                stop_between_batches(query)
        metrics.observe_progress(query.recentProgress)
    finally:
        if query.isActive:
            query.stop()
        sink.close()
        metrics.close()
    return metrics
