"""Client libraries' log noise kept off the console: at most one line per message and interval (while a broker is
down, aiokafka logs the same few errors about 75 times a second: 5,665 lines in a 74 s outage here), and none for
kafka-python's IO loop running a step past 0.1 s."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable

REPEAT_INTERVAL_S = 30.0
SLOW_STEP_LOGGER = "kafka.net.selector"
SLOW_STEP_REPORTED_S = 1.0
"""kafka-python warns of any IO-loop step over 0.1 s; a busy machine does that every few seconds, harmlessly. A step
of a second or more can time connections out, so that one is still reported."""
_SLOW_STEP = re.compile(r"Task .* ran for (\d+(?:\.\d+)?)s \(>[\d.]+s threshold\)", re.DOTALL)
MAX_TEMPLATES = 1024
"""Templates remembered at once; a library that logs formatted text makes every line its own template."""


class RepeatLimit(logging.Filter):
    """Passes the first record of each (logger, message template), then at most one per `interval_s`; the one that
    passes after others were held back says how many."""

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (when one last passed, held since)
        self._lock = threading.Lock()  # Faust's consumer thread logs too

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a repeat within the interval; never raises (it runs inside the client library's calls)."""
        try:
            return self._passes(record)
        except Exception:  # noqa: BLE001 - a record we cannot key is let through, as without the limit
            return True

    def _passes(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        with self._lock:
            now = self._clock()
            passed_at, held = self._windows.get(key, (-math.inf, 0))
            if now - passed_at < self.interval_s:
                self._windows[key] = (passed_at, held + 1)
                return False
            if key not in self._windows and len(self._windows) >= MAX_TEMPLATES:
                self._windows = {k: w for k, w in self._windows.items() if now - w[0] < self.interval_s}
                if len(self._windows) >= MAX_TEMPLATES:
                    self._windows.clear()
            self._windows[key] = (now, 0)
        if held:  # the note holds no `%`, so a template with arguments still formats
            record.msg = f"{record.msg} [and {held} more like it in the last {now - passed_at:.0f} s]"
        return True


def limit_repeats(*prefixes: str, interval_s: float = REPEAT_INTERVAL_S) -> RepeatLimit:
    """Put one `RepeatLimit` on every logger that exists now under `prefixes` (a filter acts only on its own
    logger's records, so import the library first); returns it."""
    limit = RepeatLimit(interval_s)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(prefixes):
            logging.getLogger(name).addFilter(limit)
    return limit


class SlowStepFilter(logging.Filter):
    """Drops kafka-python's warning that a step of its IO loop ran past its 0.1 s threshold, unless the step took
    `SLOW_STEP_REPORTED_S` or more; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a slow-step warning under a second; never raises (it runs inside the client library's calls)."""
        try:
            found = _SLOW_STEP.match(record.getMessage())
        except Exception:  # noqa: BLE001 - a record we cannot read is let through
            return True
        return found is None or float(found.group(1)) >= SLOW_STEP_REPORTED_S


def quiet_slow_steps() -> SlowStepFilter:
    """The `SlowStepFilter` on kafka-python's IO-loop logger, put there by the first call; returns it."""
    logger = logging.getLogger(SLOW_STEP_LOGGER)
    quiet = next((f for f in logger.filters if isinstance(f, SlowStepFilter)), None) or SlowStepFilter()
    logger.addFilter(quiet)  # once: a filter already there is not added again
    return quiet
