"""A deterministic synthetic city: drivers work shifts, get offers, accept or decline by a known logistic truth.

Ground truth (documented, `TruthModel`): an offer is declined (or left unanswered) with probability
    sigmoid(intercept + propensity_driver + Σ_f weight_f · (feature_f − centre_f))
over docs/spec.md §3.2 features computed with the shared fold and derivation (`features.fold`, `features.derive`) on the
driver's events strictly before the offer: hours on shift (fatigue), consecutive trips (streak), trips today, pickup
ETA, surge, rider rating, peak hour and trip duration; `propensity_driver` ~ N(0, propensity_sd) is latent. A
declined offer is an explicit `offer_declined`, or (share `no_response_share`) no answer at all, which docs/spec.md §3.3
labels 1 too. Accepted trips complete after ETA + duration and are rated by the rider most of the time.

Public API used by other stages: `generate_city`, `simulate`, `score_requests`, `drivers_for_events`, `TruthModel`.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from batch.eventlog import EVENT_SCHEMA, to_messages
from batch.metrics import roc_auc
from features.derive import HOUR_MS, is_peak_hour, model_features
from features.fold import DriverState
from schemas.features import MODEL_FEATURES
from schemas.messages import SCHEMA_VERSION

DEFAULT_START_MS = 1_717_372_800_000  # 2024-06-03T00:00:00Z, a Monday
MINUTE_MS = 60_000
RESPONSE_TIMEOUT_MS = 120_000  # docs/spec.md §3.3: no answer within 120 s counts as a decline
EVENTS_PER_DRIVER_DAY = 42.0  # measured mean, used to size a city for a target event count
_CHUNK_DRIVERS = 250  # drivers per work unit
_NO_OFFER = (None, None, None, None)


@dataclass(frozen=True)
class TruthModel:
    """The generator's ground-truth decline model (see the module docstring)."""

    intercept: float = -0.6
    weights: tuple[tuple[str, float, float], ...] = (  # (model feature, weight, centre)
        ("hours_on_shift", 0.16, 4.0),
        ("consecutive_trips", -0.15, 3.0),
        ("trips_today", 0.03, 6.0),
        ("pickup_eta_min", 0.20, 5.0),
        ("surge_multiplier", -1.1, 1.0),
        ("rider_rating", -1.2, 4.6),
        ("is_peak_hour", 0.35, 0.0),
        ("est_trip_duration_min", 0.012, 15.0),
    )
    propensity_sd: float = 0.7
    no_response_share: float = 0.15

    def __post_init__(self) -> None:
        unknown = [name for name, _, _ in self.weights if name not in MODEL_FEATURES]
        if unknown:
            raise ValueError(f"truth weights name unknown model features: {unknown}")
        object.__setattr__(self, "_terms", tuple((MODEL_FEATURES.index(name), w) for name, w, _ in self.weights))
        object.__setattr__(self, "_offset", self.intercept - float(sum(w * c for _, w, c in self.weights)))

    def probability(self, features: Sequence[float], propensity: float) -> float:
        """True decline probability of one offer from its 12 model features (MODEL_FEATURES order)."""
        margin = self._offset + propensity
        for i, w in self._terms:
            margin += w * features[i]
        return 1.0 / (1.0 + math.exp(-margin))

    def describe(self) -> dict[str, Any]:
        """The truth as plain data, saved next to the log."""
        return {
            "intercept": self.intercept,
            "weights": {name: {"weight": w, "centre": c} for name, w, c in self.weights},
            "propensity_sd": self.propensity_sd,
            "no_response_share": self.no_response_share,
        }


@dataclass(frozen=True)
class CityConfig:
    """Size and randomness of one simulated city."""

    seed: int = 7
    drivers: int = 1000
    days: int = 7
    start_ms: int = DEFAULT_START_MS
    late_joiner_share: float = 0.1  # drivers whose first shift is later in the period (cold-start features)
    truth: TruthModel = field(default_factory=TruthModel)


@dataclass
class City:
    """A simulated city: its event log (normalised TripEvent columns + true probability) and summary."""

    config: CityConfig
    events: pa.Table
    offers: int
    labels: np.ndarray  # 1 = declined or unanswered, per offer in simulation order
    true_p: np.ndarray

    @property
    def oracle_auc(self) -> float:
        """AUC of the true probabilities against the realised labels: the best any model can do."""
        return roc_auc(self.labels, self.true_p)

    @property
    def driver_ids(self) -> list[str]:
        """Every driver of the city, including ones that never worked."""
        return [driver_id(i) for i in range(self.config.drivers)]

    @property
    def end_ms(self) -> int:
        """Time of the last event."""
        return int(pc.max(self.events.column("ts_ms")).as_py()) if self.events.num_rows else self.config.start_ms

    def messages(self) -> Iterator[dict[str, Any]]:
        """The log as TripEvent messages in time order, ready for `schemas.messages.encode`."""
        return to_messages(self.events)

    def summary(self) -> dict[str, Any]:
        """Counts, time span and oracle AUC, as saved to `_city.json` next to the log."""
        counts = self.events.group_by("event_type").aggregate([("event_id", "count")]).to_pylist()
        return {
            "seed": self.config.seed,
            "drivers": self.config.drivers,
            "days": self.config.days,
            "start_ms": self.config.start_ms,
            "end_ms": self.end_ms,
            "events": self.events.num_rows,
            "offers": self.offers,
            "decline_rate": float(self.labels.mean()) if self.offers else None,
            "oracle_auc": self.oracle_auc if self.offers else None,
            "event_counts": {row["event_type"]: row["event_id_count"] for row in counts},
            "truth": self.config.truth.describe(),
        }


def driver_id(index: int) -> str:
    """The id of the `index`-th driver of a city."""
    return f"d{index:06d}"


def drivers_for_events(events: int, days: int) -> int:
    """How many drivers make roughly `events` events over `days` days."""
    return max(1, round(events / (days * EVENTS_PER_DRIVER_DAY)))


def _offer_draws(rng: np.random.Generator, n: int) -> list[list[float]]:
    """`n` offers' worth of random numbers, one row per offer (columns as unpacked in `_simulate_driver`)."""
    return np.column_stack([
        np.clip(np.round(rng.lognormal(math.log(4.5), 0.55, n), 1), 0.5, 30.0),  # pickup eta (min)
        rng.normal(0.0, 1.0, n),  # surge latent
        np.clip(np.round(rng.lognormal(math.log(15.0), 0.5, n), 1), 3.0, 90.0),  # trip duration (min)
        np.clip(np.round(5.0 - np.abs(rng.normal(0.0, 0.45, n)), 2), 1.0, 5.0),  # rider rating
        rng.random(n),  # decision
        rng.random(n),  # silent decline
        rng.integers(3_000, 45_000, n),  # response delay (ms)
        rng.exponential(1.0, n),  # idle gap, scaled by demand
        rng.random(n),  # long break
        rng.integers(5_000, 90_000, n),  # rating delay (ms)
        rng.random(n),  # rated at all
        rng.normal(0.0, 0.6, n),  # rating noise
    ]).tolist()


def _surge(latent: float, peak: bool) -> float:
    """Surge multiplier ≥ 1 from a standard-normal draw; higher at peak hours."""
    s = 0.35 * latent + (0.25 if peak else -0.1)
    return 1.0 if s <= 0 else min(3.5, round(1.0 + 1.5 * s, 1))


def _simulate_driver(index: int, config: CityConfig, rows: list[tuple], labels: list[int], true_p: list[float]) -> None:
    """All shifts of one driver from its own seeded generator (drivers are independent and reproducible).

    Each event is appended to `rows` (event-log column order) and applied to the driver's fold state, so every
    offer's truth is computed from the docs/spec.md §3.2 features as of the events before it.
    """
    rng = np.random.default_rng([config.seed, index])
    truth = config.truth
    drv = driver_id(index)
    propensity = float(rng.normal(0.0, truth.propensity_sd))
    quality = float(rng.normal(0.0, 0.35))
    work_p = float(rng.uniform(0.55, 0.95))
    first_day = int(rng.integers(1, max(config.days, 2))) if rng.random() < config.late_joiner_share else 0
    pref_start_h = float(rng.choice([6.0, 14.0, 20.0], p=[0.5, 0.3, 0.2]))
    day_draws = rng.random((config.days, 3)).tolist()
    state = DriverState()
    apply, append = state.apply, rows.append
    seq = 0

    def emit(ts: int, kind: str, trip: str | None = None, offer: tuple = _NO_OFFER, rating: float | None = None,
             p: float | None = None) -> None:
        nonlocal seq
        event_id = f"{drv}-{seq:06d}"
        seq += 1
        append((event_id, kind, ts, drv, trip, *offer, rating, SCHEMA_VERSION, p))
        apply(ts, event_id, kind, rating)

    draws = _offer_draws(rng, 24 * config.days)
    k, trip_no, free_at = 0, 0, 0
    for day in range(first_day, config.days):
        works, start_u, length_u = day_draws[day]
        if works > work_p:
            continue
        start = config.start_ms + day * 24 * HOUR_MS + int((pref_start_h + 2.0 * start_u) * HOUR_MS)
        start = max(start, free_at + 4 * HOUR_MS)
        end = start + int((4.0 + 7.0 * length_u) * HOUR_MS)
        emit(start, "shift_started")
        t = free_at = start + int(MINUTE_MS * (1 + 3 * start_u))
        while t < end:
            if k == len(draws):
                draws, k = _offer_draws(rng, 24 * config.days), 0
            eta, surge_z, duration, rider, decide, silent, delay, gap, brk, rate_delay, rated, noise = draws[k]
            k += 1
            offer = (eta, _surge(surge_z, is_peak_hour(t) == 1.0), duration, rider)
            p = truth.probability(model_features(state.to_bins(), t, eta, rider, offer[1], duration), propensity)
            trip = f"{drv}-t{trip_no:05d}"
            trip_no += 1
            emit(t, "trip_offered", trip, offer, p=p)
            true_p.append(p)
            labels.append(1 if decide < p else 0)
            if decide >= p:
                emit(t + int(delay), "offer_accepted", trip)
                free_at = t + int(delay) + int((eta + duration) * MINUTE_MS)
                emit(free_at, "trip_completed", trip)
                if rated < 0.8:
                    free_at += int(rate_delay)
                    emit(free_at, "trip_rated", trip, rating=float(min(5, max(1, round(4.5 + quality + noise)))))
            elif silent < truth.no_response_share:
                free_at = t + RESPONSE_TIMEOUT_MS + 1_000
            else:
                free_at = t + int(delay)
                emit(free_at, "offer_declined", trip)
            idle = (4.0 if is_peak_hour(free_at) == 1.0 else 9.0) * gap + (35.0 + 40.0 * brk if brk < 0.06 else 0.0)
            t = free_at + MINUTE_MS + int(idle * MINUTE_MS)
        free_at = max(end, free_at + 1_000)
        emit(free_at, "shift_ended")


def _table(rows: list[tuple]) -> pa.Table:
    """Event rows as an Arrow table of the event-log schema."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(EVENT_SCHEMA)
    arrays = [pa.array(column, type=f.type) for column, f in zip(columns, EVENT_SCHEMA, strict=True)]
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def _simulate_chunk(config: CityConfig, indices: range) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Simulate a range of drivers: (events, labels, true probabilities)."""
    rows: list[tuple] = []
    labels: list[int] = []
    true_p: list[float] = []
    for index in indices:
        _simulate_driver(index, config, rows, labels, true_p)
    return _table(rows), np.asarray(labels, np.int8), np.asarray(true_p)


def simulate(config: CityConfig, progress: bool = False, workers: int | None = None) -> City:
    """Run the city in driver chunks (in parallel processes for big cities); the same output for any `workers`."""
    if workers is None:
        workers = 1 if config.drivers * config.days < 4_000 else (os.cpu_count() or 1)
    step = max(1, min(_CHUNK_DRIVERS, -(-config.drivers // max(workers, 1))))
    chunks = [range(lo, min(lo + step, config.drivers)) for lo in range(0, config.drivers, step)]
    bar = tqdm(total=config.drivers, desc="simulate", unit="driver", disable=not progress)
    if workers <= 1:
        parts = []
        for chunk in chunks:
            parts.append(_simulate_chunk(config, chunk))
            bar.update(len(chunk))
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_simulate_chunk, config, chunk): len(chunk) for chunk in chunks}
            for future in as_completed(futures):
                bar.update(futures[future])
            parts = [future.result() for future in futures]
    bar.close()
    tables, labels, true_p = zip(*parts, strict=True) if parts else ((), (), ())
    table = pa.concat_tables(tables) if tables else _table([])
    table = table.sort_by([("ts_ms", "ascending"), ("event_id", "ascending")])
    labels_all = np.concatenate(labels) if labels else np.zeros(0, np.int8)
    true_p_all = np.concatenate(true_p) if true_p else np.zeros(0)
    return City(config, table, int(labels_all.size), labels_all, true_p_all)


def generate_city(seed: int = 7, drivers: int = 1000, days: int = 7, start_ms: int = DEFAULT_START_MS,
                  progress: bool = False, workers: int | None = None) -> City:
    """A city of `drivers` drivers over `days` days; `city.events` is the Arrow event log, `.to_pandas()` away."""
    config = CityConfig(seed=seed, drivers=drivers, days=days, start_ms=start_ms)
    return simulate(config, progress=progress, workers=workers)


def score_requests(driver_ids: Sequence[str], n: int, seed: int = 11, start_ms: int = DEFAULT_START_MS,
                   interval_ms: int = 1_000, candidates: tuple[int, int] = (10, 50),
                   unknown_share: float = 0.02) -> list[dict[str, Any]]:
    """`n` ScoreRequests (docs/spec.md §2, `ts` as epoch ms) every `interval_ms` from `start_ms`, candidates drawn
    from `driver_ids`; a share of candidates are unknown drivers (no features) to exercise fallbacks."""
    rng = np.random.default_rng(seed)
    pool = np.asarray(list(driver_ids))
    if pool.size == 0:
        raise ValueError("score_requests needs at least one driver id")
    lo, hi = candidates
    requests = []
    for i in range(n):
        k = int(rng.integers(lo, hi + 1))
        chosen = rng.choice(pool, size=min(k, pool.size), replace=False).tolist()
        etas = np.clip(np.round(rng.lognormal(math.log(4.5), 0.55, len(chosen)), 1), 0.5, 30.0).tolist()
        unknown = rng.random(len(chosen)) < unknown_share
        cands = [
            {"driver_id": f"x{i:07d}-{j}" if unknown[j] else d, "pickup_eta_min": eta}
            for j, (d, eta) in enumerate(zip(chosen, etas, strict=True))
        ]
        ts = start_ms + i * interval_ms
        requests.append({
            "request_id": f"r{seed}-{i:08d}",
            "ts": ts,
            "surge_multiplier": _surge(float(rng.normal()), is_peak_hour(ts) == 1.0),
            "est_duration_min": float(np.clip(round(rng.lognormal(math.log(15.0), 0.5), 1), 3.0, 90.0)),
            "rider_rating": float(np.clip(round(5.0 - abs(rng.normal(0.0, 0.45)), 2), 1.0, 5.0)),
            "candidates": cands,
        })
    return requests
