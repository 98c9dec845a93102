"""The stream's progress polling (no Spark: a stand-in query isolates the polling rule): every completed batch's
progress reaches the metrics exactly once and in order, however many batches complete between two polls."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streaming.job import report_progress

RECENT = 100  # Spark keeps this many recent reports (spark.sql.streaming.numRecentProgressUpdates)


class CompletedBatches:
    """What a `StreamingQuery` shows of its completed batches: the last report and the recent ones."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def complete(self, count: int) -> None:
        start = len(self.reports)
        self.reports += [{"batchId": batch_id, "numInputRows": batch_id} for batch_id in range(start, start + count)]

    @property
    def lastProgress(self) -> dict[str, Any] | None:  # noqa: N802 - the name pyspark's query uses
        return self.reports[-1] if self.reports else None

    @property
    def recentProgress(self) -> list[dict[str, Any]]:  # noqa: N802 - the name pyspark's query uses
        return self.reports[-RECENT:]


class Observed:
    """The metrics' side: the batch ids handed over, in order."""

    def __init__(self) -> None:
        self.batch_ids: list[int] = []

    def observe_progress(self, progress: dict[str, Any]) -> None:
        self.batch_ids.append(progress["batchId"])


@given(st.lists(st.integers(min_value=0, max_value=RECENT), max_size=30))
def test_each_batch_is_reported_once_in_order(completed_between_polls: list[int]) -> None:
    query, metrics, seen = CompletedBatches(), Observed(), -1
    for count in completed_between_polls:
        query.complete(count)
        seen = report_progress(query, metrics, seen)  # type: ignore[arg-type] - the stand-ins above
    assert metrics.batch_ids == list(range(len(query.reports)))
    assert seen == len(query.reports) - 1
