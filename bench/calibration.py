"""Machine-speed calibration every benchmark prints at its start and end: shared machines change speed, so runs
on different days compare through these figures."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def python_speed_ms() -> float:
    """Milliseconds for a fixed pure-Python loop."""
    started = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i
    return (time.perf_counter() - started) * 1000


@dataclass(frozen=True)
class Calibration:
    """The load average and the speed of a fixed Python loop, taken now."""

    load: tuple[float, float, float]
    loop_ms: float

    @classmethod
    def now(cls) -> Calibration:
        return cls(os.getloadavg(), python_speed_ms())

    def __str__(self) -> str:
        return (f"load average {', '.join(f'{x:.1f}' for x in self.load)} on {os.cpu_count()} CPUs; "
                f"1M-step Python loop {self.loop_ms:.0f} ms")
