"""docs/spec.md §4 ranking, pure and synchronous: model scoring with per-candidate prior fallback, or distance-only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.derive import EVENT_COLUMN, PARTIAL, model_feature_columns, status_codes
from featurestore.base import FeatureMatrix
from modelregistry.export import ModelExport
from runtime.config import Settings
from schemas.messages import FEATURE_STATUSES, ranked_candidate

STORE_ERROR = "store_error"
STORE_TIMEOUT = "store_timeout"
NO_MODEL = "no_model"
NO_FEATURES = "no_features"
SCORER_ERROR = "scorer_error"
FALLBACK_REASONS = (STORE_ERROR, STORE_TIMEOUT, NO_MODEL, NO_FEATURES, SCORER_ERROR)
NO_AGES = np.empty(0)


@dataclass(frozen=True)
class Policy:
    """The ranking knobs of docs/spec.md §4."""

    redispatch_penalty_min: float = 5.0
    max_feature_age_ms: float = 86_400_000.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(settings.redispatch_penalty_min, settings.max_feature_age_s * 1000.0)


@dataclass(frozen=True)
class Ranking:
    """The ranked candidates of one request, plus what monitoring needs."""

    strategy: str  # "model" | "distance_only"
    reason: str | None
    ranked: list[dict[str, Any]]
    statuses: list[str]  # per candidate, request order
    risks: np.ndarray  # model predictions of the candidates with usable features
    ages_ms: np.ndarray  # age of every record read


class UnreadableRecord(ValueError):
    """A candidate's record holds a value that is not a number: its request is answered `scorer_error`."""


def rank_request(request: Mapping[str, Any], read: FeatureMatrix | str, model: ModelExport | None,
                 policy: Policy) -> Ranking:
    """Rank a validated request from its candidates' records (or a store-failure reason) and the loaded model."""
    return rank_requests([request], [read], model, policy)[0]


@dataclass(frozen=True)
class _Plan:
    """A request that goes to the model: its candidates' etas, statuses, record ages and model features, and which
    of them are `usable` (present or partial: scored; the rest get the prior)."""

    request: Mapping[str, Any]
    etas: np.ndarray
    statuses: list[str]
    ages_ms: np.ndarray
    usable: np.ndarray  # bool per candidate
    features: np.ndarray  # one row per candidate: fewer numpy calls than picking the usable rows first


def rank_requests(requests: Sequence[Mapping[str, Any]], reads: Sequence[FeatureMatrix | str],
                  model: ModelExport | None, policy: Policy) -> list[Ranking]:
    """Rank validated requests together (`reads[k]` belongs to `requests[k]`): one model call scores the
    candidates of them all; fallbacks stay per request."""
    plans = [_plan(request, read, model, policy) for request, read in zip(requests, reads, strict=True)]
    scored = [plan for plan in plans if isinstance(plan, _Plan)]
    if not scored:
        return plans  # type: ignore[return-value] - every entry is a fallback Ranking
    features = scored[0].features if len(scored) == 1 else np.concatenate([plan.features for plan in scored])
    predicted = model.predict_proba(features)
    rankings, start = [], 0
    for plan in plans:
        if isinstance(plan, _Plan):
            end = start + len(plan.usable)
            plan = _model_ranking(plan, predicted[start:end], model.prior, policy.redispatch_penalty_min)
            start = end
        rankings.append(plan)
    return rankings


def _plan(request: Mapping[str, Any], read: FeatureMatrix | str, model: ModelExport | None,
          policy: Policy) -> _Plan | Ranking:
    """What the model must score for this request, or its whole-request fallback."""
    candidates = request["candidates"]
    if isinstance(read, str):
        return distance_only(candidates, read, ["missing"] * len(candidates), NO_AGES)
    if read.unreadable:
        raise UnreadableRecord(f"the record of {candidates[read.unreadable[0]]['driver_id']!r} holds a value that "
                               "is not a number")
    stored, at_ms = read.values, request["ts_ms"]
    codes = status_codes(stored, at_ms, policy.max_feature_age_ms)
    statuses = [FEATURE_STATUSES[code] for code in codes.tolist()]
    event_ms = stored[:, EVENT_COLUMN]
    ages = read.now_ms - event_ms[~np.isnan(event_ms)]
    if model is None:
        return distance_only(candidates, NO_MODEL, statuses, ages)
    usable = codes <= PARTIAL
    if not usable.any():
        return distance_only(candidates, NO_FEATURES, statuses, ages)
    etas = np.array([candidate["pickup_eta_min"] for candidate in candidates])
    features = model_feature_columns(stored, at_ms, etas, request["rider_rating"], request["surge_multiplier"],
                                     request["est_duration_min"])
    return _Plan(request, etas, statuses, ages, usable, features)


def _model_ranking(plan: _Plan, predicted: np.ndarray, prior: float, penalty: float) -> Ranking:
    """Rank by expected cost; candidates without usable features get the prior."""
    candidates, statuses = plan.request["candidates"], plan.statuses
    risks = np.where(plan.usable, predicted, prior)
    costs = plan.etas + risks * penalty
    # (cost, eta, driver_id, index) tuples sort by cost, ties by eta then driver_id
    order = sorted(zip(costs.tolist(), plan.etas.tolist(), [c["driver_id"] for c in candidates],
                       range(len(candidates)), strict=True))
    risk_values = risks.tolist()
    ranked = [
        ranked_candidate(driver_id, rank, risk_values[i], eta, cost, statuses[i])
        for rank, (cost, eta, driver_id, i) in enumerate(order, start=1)
    ]
    return Ranking("model", None, ranked, statuses, predicted[plan.usable], plan.ages_ms)


def distance_only(
    candidates: Sequence[Mapping[str, Any]], reason: str, statuses: Sequence[str], ages_ms: np.ndarray
) -> Ranking:
    """The whole-request fallback: ascending eta, ties by driver_id, no risk, cost = eta."""
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i]["pickup_eta_min"], candidates[i]["driver_id"]))
    ranked = [
        ranked_candidate(candidates[i]["driver_id"], rank, None, candidates[i]["pickup_eta_min"],
                         candidates[i]["pickup_eta_min"], statuses[i])
        for rank, i in enumerate(order, start=1)
    ]
    return Ranking("distance_only", reason, ranked, list(statuses), np.empty(0), ages_ms)
