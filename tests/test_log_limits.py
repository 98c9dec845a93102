"""`RepeatLimit`: per logger and message template, one line per interval, and every record held back is counted in
the next line that passes."""

from __future__ import annotations

import logging
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.net.selector import NetworkSelector

from runtime import log_limits
from runtime.log_limits import SLOW_STEP_LOGGER, SLOW_STEP_REPORTED_S, RepeatLimit, limit_repeats, quiet_slow_steps

INTERVAL_S = 30.0
TEMPLATES = ("Unable connect to node with id %s: %s", "Failed fetch messages from %s", "100% done")
NOTE = re.compile(r" \[and (\d+) more like it in the last (\d+) s\]$")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(logger: str, template: str) -> logging.LogRecord:
    args = ("1", "refused")[: template.count("%s")]
    return logging.LogRecord(logger, logging.ERROR, __file__, 1, template, args, None)


STEPS = st.lists(st.tuples(st.sampled_from(("aiokafka", "aiokafka.conn")), st.sampled_from(TEMPLATES),
                           st.floats(0, 40)), max_size=200)


@given(STEPS)
def test_one_line_per_template_and_interval_and_every_held_record_counted(steps: list[tuple[str, str, float]]) -> None:
    clock = Clock()
    limit = RepeatLimit(INTERVAL_S, clock)
    last_passed: dict[tuple[str, str], float] = {}
    held: dict[tuple[str, str], int] = {}
    for logger, template, wait_s in steps:
        clock.now += wait_s
        record = _record(logger, template)
        key = (logger, template)
        if limit.filter(record):
            assert clock.now - last_passed.get(key, -1e9) >= INTERVAL_S, "passed within the interval"
            line = record.getMessage()  # formats with the record's arguments
            note = NOTE.search(line)
            assert (int(note.group(1)) if note else 0) == held.get(key, 0), line
            last_passed[key], held[key] = clock.now, 0
        else:
            assert clock.now - last_passed[key] < INTERVAL_S, "held outside the interval"
            held[key] = held.get(key, 0) + 1


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_a_record_it_cannot_key_passes_instead_of_raising_into_the_client() -> None:
    record = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, Unprintable(), (), None)
    assert RepeatLimit(INTERVAL_S, Clock()).filter(record)


def test_past_the_template_memory_it_forgets_and_passes_rather_than_grow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_limits, "MAX_TEMPLATES", 8)
    limit = RepeatLimit(INTERVAL_S, Clock())
    assert all(limit.filter(_record("aiokafka", f"offset {i}")) for i in range(100)), "each text is new: passes"
    assert len(limit._windows) <= 8


def test_limit_repeats_filters_the_existing_loggers_under_the_prefix_and_no_other() -> None:
    names = ("limited.test", "limited.test.child", "unlimited.test")
    loggers = [logging.getLogger(name) for name in names]
    limit = limit_repeats("limited.")
    try:
        assert [limit in logger.filters for logger in loggers] == [True, True, False]
    finally:
        for logger in loggers:
            logger.removeFilter(limit)


def _slow_step_warnings(step_s: float, caplog: pytest.LogCaptureFixture) -> list[str]:
    """kafka-python's own warnings when a step of its IO loop blocks for `step_s` (its threshold lowered to 1 ms)."""
    selector = NetworkSelector(slow_task_threshold_secs=0.001)

    async def step() -> None:
        time.sleep(step_s)  # what a busy machine, or the GIL held by another thread, does to the loop

    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger=SLOW_STEP_LOGGER):
            selector.run(step)
    finally:
        selector.close()
    return [record.getMessage() for record in caplog.records if "threshold" in record.getMessage()]


@pytest.mark.parametrize(("step_s", "shown"), [(0.002, False), (SLOW_STEP_REPORTED_S, True)])
def test_kafka_pythons_slow_io_loop_steps_are_shown_from_a_second_on(step_s: float, shown: bool,
                                                                      caplog: pytest.LogCaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger(SLOW_STEP_LOGGER), "filters", [])  # as before `tripscore` set logging up
    assert len(_slow_step_warnings(step_s, caplog)) == 1, "kafka-python warns of the step"
    assert quiet_slow_steps() is quiet_slow_steps(), "one filter, however often logging is set up"
    assert len(_slow_step_warnings(step_s, caplog)) == shown
