"""One batch read of every candidate's stored columns per request, under a deadline, off or on the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait

from features.derive import STORED_COLUMNS
from featurestore.base import FeatureMatrix, OnlineStore, StoreError, StoreTimeout
from scorer.rank import STORE_ERROR, STORE_TIMEOUT

log = logging.getLogger(__name__)

READ_MODES = ("auto", "executor", "inline")
INLINE_BACKENDS = frozenset({"sqlite"})  # local, sub-ms, CPU-bound reads: a thread hop only adds GIL waits
READ_HISTORY = 256  # the last reads kept to tell how long a waiting request has waited for the store


def read_features(store: OnlineStore, driver_ids: Sequence[str], deadline_s: float) -> FeatureMatrix | str:
    """A blocking read of the columns the features are derived from; a store error, or an answer later than the
    deadline, gives the fallback reason."""
    started = time.perf_counter()
    try:
        read = store.read_matrix(driver_ids, STORED_COLUMNS)
    except StoreTimeout:
        return STORE_TIMEOUT
    except StoreError as exc:
        log.warning("feature read failed: %s", exc)
        return STORE_ERROR
    except Exception:  # a backend bug must not cost the request its answer
        log.exception("feature read raised outside the store contract")
        return STORE_ERROR
    return read if time.perf_counter() - started <= deadline_s else STORE_TIMEOUT


def resolve_mode(mode: str, backend: str) -> str:
    """`auto` reads SQLite inline and network stores in the pool."""
    if mode not in READ_MODES:
        raise ValueError(f"read mode {mode!r} is not one of {READ_MODES}")
    if mode == "auto":
        return "inline" if backend in INLINE_BACKENDS else "executor"
    return mode


class FeatureReader:
    """Reads in a thread pool awaited with a timeout (`executor`), or in the loop's own thread (`inline`).

    The deadline holds per request: a request that waited behind earlier reads (a frozen store's, up to the
    deadline) has only what is left of it for its own (`budget`)."""

    def __init__(self, store: OnlineStore, deadline_ms: float, mode: str = "auto", threads: int = 4) -> None:
        self.store = store
        self.deadline_s = deadline_ms / 1000.0
        self.mode = mode = resolve_mode(mode, store.backend)
        self._pool: ThreadPoolExecutor | None = None
        self._reads: deque[tuple[float, float]] = deque(maxlen=READ_HISTORY)  # (started, ended), time.monotonic
        if mode == "inline":
            self._warm_up()
        else:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="feature-read", initializer=self._warm_up)
            barrier = threading.Barrier(threads)  # start every thread now, so no request pays for a connection
            wait([self._pool.submit(barrier.wait, 10.0) for _ in range(threads)], timeout=15.0)

    def _warm_up(self) -> None:
        """Open this thread's store connection with a throwaway read."""
        read_features(self.store, ["warm-up"], 60.0)

    def budget(self, arrived: float) -> float:
        """Seconds left of the deadline of a request that reached the scorer at `arrived` (`time.monotonic`): the
        deadline less the time this reader waited for the store since (exact with one actor, the default)."""
        waited = 0.0
        for started, ended in reversed(self._reads):
            if ended <= arrived or waited >= self.deadline_s:
                break
            waited += ended - max(started, arrived)
        return self.deadline_s - waited

    async def read(self, driver_ids: Sequence[str], budget_s: float | None = None) -> FeatureMatrix | str:
        """The records of `driver_ids` in order within `budget_s` (default: the whole deadline), or `store_error` /
        `store_timeout`."""
        timeout = self.deadline_s if budget_s is None else budget_s
        started = time.monotonic()
        try:
            if self._pool is None:
                return read_features(self.store, driver_ids, timeout)
            job = asyncio.get_running_loop().run_in_executor(self._pool, read_features, self.store, driver_ids,
                                                             timeout)
            try:
                return await asyncio.wait_for(job, timeout)
            except TimeoutError:
                return STORE_TIMEOUT
        finally:
            self._reads.append((started, time.monotonic()))

    def close(self) -> None:
        """Stop the pool without waiting for a hung read."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
