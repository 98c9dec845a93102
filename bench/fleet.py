"""A fleet for `bench/stream.py`: N drivers with store records (as a backfill leaves them) and their trip events at
real-time proportions, so a micro-batch touches about as many distinct drivers as it has events.

Each event's driver is drawn uniformly from the fleet (seeded), and each driver goes round one cycle of event types
(offer, accept, complete, rate, offer, decline) from a random start, so every fold path is exercised.
"""

from __future__ import annotations

import random
import time

import numpy as np
from tqdm import tqdm

from features.fold import DriverState
from featurestore.base import OnlineStore

CYCLE = ("trip_offered", "offer_accepted", "trip_completed", "trip_rated", "trip_offered", "offer_declined")
OFFER = {"pickup_eta_min": 4.0, "surge_multiplier": 1.2, "est_duration_min": 15.0, "rider_rating": 4.8}
HISTORY_PROFILES = 1_000  # distinct backfilled records, shared round-robin by the fleet (content, not size, varies)
WRITE_CHUNK = 20_000


def driver_id(index: int) -> str:
    """The id of the fleet's `index`-th driver."""
    return f"fleet-{index:07d}"


def history(rng: random.Random, now_ms: int) -> dict:
    """A backfilled record: a shift started two to four hours ago and the trips since, the last a few minutes ago."""
    state = DriverState()
    ts = now_ms - rng.randint(2, 4) * 3_600_000
    state.apply(ts, "h-0", "shift_started", None)
    step = 0
    while (ts := ts + rng.randint(60_000, 900_000)) < now_ms - 600_000:
        kind = CYCLE[step % len(CYCLE)]
        state.apply(ts, f"h-{step + 1}", kind, float(rng.randint(3, 5)) if kind == "trip_rated" else None)
        step += 1
    return state.to_bins()


def preload(store: OnlineStore, fleet: int, seed: int = 7) -> float:
    """Write every driver's backfilled record (`history`) through the store's bulk write; returns the seconds."""
    rng, now_ms = random.Random(seed), time.time_ns() // 1_000_000
    profiles = [history(rng, now_ms) for _ in range(HISTORY_PROFILES)]
    started = time.monotonic()
    with tqdm(total=fleet, desc="backfilling the fleet's records", unit="rec", unit_scale=True) as bar:
        for start in range(0, fleet, WRITE_CHUNK):
            ids = range(start, min(fleet, start + WRITE_CHUNK))
            store.write([(driver_id(i), profiles[i % HISTORY_PROFILES]) for i in ids])
            bar.update(len(ids))
    return time.monotonic() - started


class FleetEvents:
    """Trip events of the fleet, drawn in order (`take`); `ts` is left for the sender to stamp."""

    def __init__(self, fleet: int, seed: int = 11) -> None:
        self.fleet, self.rng = fleet, np.random.default_rng(seed)
        self.position = self.rng.integers(0, len(CYCLE), fleet)  # each driver's place in the cycle
        self.count = 0

    def take(self, events: int, prefix: str = "ev") -> list[dict]:
        """The next `events` events."""
        drivers = self.rng.integers(0, self.fleet, events)
        return [self._event(int(d), prefix) for d in drivers]

    def _event(self, index: int, prefix: str) -> dict:
        kind = CYCLE[self.position[index] % len(CYCLE)]
        self.position[index] += 1
        self.count += 1
        trip = f"trip-{index}-{self.position[index] // 3}"
        event = {"event_id": f"{prefix}-{self.count:09d}", "event_type": kind, "ts": 0, "driver_id": driver_id(index),
                 "trip_id": trip}
        if kind == "trip_offered":
            event.update(OFFER)
        elif kind == "trip_rated":
            event["rating"] = 5.0
        return event
