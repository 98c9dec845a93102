"""The foreachBatch sink: runs a micro-batch (whose partitions update the store on the executors, `streaming.update`)
and hands the metrics its counts, lags and timings.

Offsets advance only when the sink returns. A partition that fails (a store or broker outage past
`TRIPSCORE_STREAM_STORE_GIVEUP_S`) fails the batch, and so the query; the batch is replayed on restart, where the
records already written recognise its events by their offsets and change nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql.streaming import StreamingQuery

from streaming.metrics import SinkStats, lag_histogram, lag_quantiles, last_execution
from streaming.update import COUNTS, TIMES

log = logging.getLogger("streaming")


class BatchSink:
    """Callable for `writeStream.foreachBatch`: computes the micro-batch (`toArrow`), hands the table to `write`
    and reports its `SinkStats` with the time the computation took (and, for the debug breakdown, the Python
    workers' time)."""

    def __init__(self, on_batch: Callable[[SinkStats], None]) -> None:
        self.on_batch = on_batch
        self.query: StreamingQuery | None = None  # set once started: its executions hold the Python workers' times

    def __call__(self, frame: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        table = frame.toArrow()
        computed = time.monotonic()
        stats = self.write(table, batch_id)
        stats.compute_s, stats.write_s = computed - started, time.monotonic() - computed
        if self.query is not None and log.isEnabledFor(logging.DEBUG):  # for the breakdown, a debug line
            stats.execution = last_execution(self.query)
        self.on_batch(stats)

    def write(self, table: pa.Table, batch_id: int) -> SinkStats:
        """Handle one computed micro-batch; raises to fail it."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sink holds."""


class StatsSink(BatchSink):
    """Sums the partitions' `update.STATS_SCHEMA` rows of a micro-batch into its `SinkStats`."""

    def write(self, table: pa.Table, batch_id: int) -> SinkStats:
        counts = {name: pc.sum(table.column(name)).as_py() or 0 for name in COUNTS}
        task_ms = {name: pc.sum(table.column(name)).as_py() or 0.0 for name in TIMES}
        lags = pc.list_flatten(table.column("lags_ms")).to_numpy(zero_copy_only=False)
        return SinkStats(batch_id=batch_id, drivers=counts["drivers"], written=counts["written"],
                         invalid=counts["invalid"], late=counts["late"], duplicates=counts["duplicates"],
                         replayed=counts["replayed"], conflicts=counts["conflicts"], lag_s=lag_quantiles(lags),
                         lag_histogram=lag_histogram(lags), task_ms=task_ms)
