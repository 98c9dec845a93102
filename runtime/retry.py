"""Retry with bounded exponential backoff inside one unit of work, giving up only after a configured time.

A dependency that blinks (store, broker) is an everyday event: the unit of work (a micro-batch write, a seed
read) waits it out, and only an outage longer than `give_up_s` ends it, with one clear line.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0


class GaveUp(RuntimeError):
    """The dependency was still failing when the give-up time ran out."""


class Interrupted(RuntimeError):
    """The process was asked to stop while waiting for the dependency."""


_GAVE_UP_LINE = re.compile(rf"{re.escape(GaveUp.__module__)}\.GaveUp: ([^\n]+)")


def gave_up_in(error: BaseException) -> GaveUp | None:
    """The `GaveUp` behind `error`, also one raised in another process (a Spark executor) and reported as text."""
    if isinstance(error, GaveUp):
        return error
    found = _GAVE_UP_LINE.search(str(error))
    return GaveUp(found.group(1)) if found else None


def retry(
    action: Callable[[], T],
    *,
    what: str,
    give_up_s: float,
    retry_on: tuple[type[BaseException], ...],
    fatal: tuple[type[BaseException], ...] = (),
    stop: threading.Event | None = None,
) -> T:
    """`action()`, retried on `retry_on` (but not `fatal`) errors with backoff from 0.2 s to 5 s, for `give_up_s`."""
    started = time.monotonic()
    delay, attempts = FIRST_DELAY_S, 0
    while True:
        try:
            return action()
        except fatal:
            raise
        except retry_on as exc:
            attempts += 1
            elapsed = time.monotonic() - started
            if elapsed + delay > give_up_s:
                raise GaveUp(f"{what}: still failing after {elapsed:.0f} s and {attempts} attempts "
                             f"(give-up time {give_up_s:.0f} s): {type(exc).__name__}: {exc}") from exc
            log.warning("%s failed (%s: %s); attempt %d, retrying in %.1f s", what, type(exc).__name__, exc,
                        attempts, delay)
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                raise Interrupted(f"{what}: stopped while retrying") from exc
            delay = min(delay * 2, MAX_DELAY_S)
