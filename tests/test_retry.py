"""Retry with backoff inside a unit of work: transient errors are waited out, the give-up time is honoured."""

from __future__ import annotations

import threading
import time

import pytest

from featurestore.base import BadInput, StoreError, StoreTimeout
from runtime.retry import GaveUp, Interrupted, retry


class Flaky:
    """Fails `failures` times with `error`, then returns the number of calls."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


def test_transient_errors_are_retried_until_success() -> None:
    action = Flaky(3, StoreTimeout("locked"))
    started = time.monotonic()
    assert retry(action, what="write", give_up_s=30, retry_on=(StoreError,)) == 4
    assert 0.2 + 0.4 + 0.8 <= time.monotonic() - started < 5  # exponential backoff from 0.2 s


def test_giving_up_names_the_work_the_time_and_the_last_error() -> None:
    action = Flaky(10**6, StoreTimeout("database is locked"))
    with pytest.raises(GaveUp, match=r"store write of batch 7: still failing after \d+ s and \d+ attempts "
                                     r"\(give-up time 1 s\): StoreTimeout: database is locked"):
        retry(action, what="store write of batch 7", give_up_s=1, retry_on=(StoreError,))
    assert action.calls >= 2


def test_fatal_and_unlisted_errors_are_not_retried() -> None:
    for error in (BadInput("bin too long"), KeyError("bug")):
        action = Flaky(1, error)
        with pytest.raises(type(error)):
            retry(action, what="write", give_up_s=30, retry_on=(StoreError,), fatal=(BadInput,))
        assert action.calls == 1


def test_a_stop_request_interrupts_the_wait() -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        retry(Flaky(10**6, StoreTimeout("locked")), what="write", give_up_s=600, retry_on=(StoreError,), stop=stop)
    assert time.monotonic() - started < 5
