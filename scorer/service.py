"""One request from raw bytes to outgoing messages: validate, read features, rank, build the response."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from featurestore.base import OnlineStore
from runtime.config import Settings
from schemas.fields import Problem
from schemas.messages import (
    MESSAGE,
    SCORE_REQUEST,
    dead_letter,
    decode_json,
    decode_score_request,
    encode,
    error_response,
    score_response,
)
from scorer import metrics
from scorer.drift import DriftMonitor
from scorer.model_watch import ActiveModel
from scorer.rank import SCORER_ERROR, Policy, Ranking, distance_only, rank_request
from scorer.reader import FeatureReader

log = logging.getLogger(__name__)
DLQ_STAGE = "score"
REQUEST_ID = next(spec for spec in SCORE_REQUEST if spec.name == "request_id")


@dataclass(frozen=True)
class Outgoing:
    """A message to produce."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class Origin:
    """Where a request was read from, for its DeadLetter."""

    topic: str
    partition: int | None
    offset: int | None


class Scorer:
    """The scoring service behind the Faust agent; every input yields at least one outgoing message."""

    def __init__(self, settings: Settings, store: OnlineStore) -> None:
        self.settings = settings
        self.policy = Policy.from_settings(settings)
        self.reader = FeatureReader(store, settings.store_deadline_ms, settings.scorer_read_mode,
                                    settings.scorer_read_threads)
        self.active = ActiveModel(settings.models_dir)
        self.drift = DriftMonitor()
        self._on_model_change()

    def poll_model(self) -> None:
        """Switch to a newly promoted model (if any) and publish the drift gauge."""
        if self.active.refresh():
            metrics.MODEL_RELOADS.inc()
            self._on_model_change()
        metrics.PSI.set(self.drift.psi())

    def _on_model_change(self) -> None:
        model = self.active.model
        self.drift.reset(model.score_histogram if model else {})
        metrics.set_model(self.active.version)

    async def handle(self, raw: bytes | None, key: bytes | None, origin: Origin) -> list[Outgoing]:
        """The response (plus a DeadLetter for a malformed request) to produce for one input; never raises."""
        request, problems = decode_score_request(raw)
        if request is None:
            return self._reject(raw, key, origin, problems)
        try:
            response = await self.score(request)
            return [Outgoing(self.settings.topic_risk_scores, request["request_id"].encode(), encode(response))]
        except Exception as exc:  # the per-request guard: a bug answers this request, it never stops the agent
            log.exception("request %r failed", request["request_id"])
            return self._reject(raw, key, origin, [(MESSAGE, f"could not be scored: {type(exc).__name__}: {exc}")])

    def _reject(self, raw: bytes | None, key: bytes | None, origin: Origin, problems: list[Problem]) -> list[Outgoing]:
        """An `error` answer (keyed by the request id when one can be read) and the input's DeadLetter."""
        request_id = _recover_request_id(raw) or (key or b"").decode("utf-8", "replace")
        metrics.DEAD_LETTERS.inc()
        metrics.RESPONSES_BY_STRATEGY["error"].inc()
        letter = dead_letter(raw, problems, stage=DLQ_STAGE, topic=origin.topic, partition=origin.partition,
                             offset=origin.offset)
        return [
            Outgoing(self.settings.topic_risk_scores, request_id.encode("utf-8", "replace") or key,
                     encode(error_response(request_id, problems))),
            Outgoing(self.settings.topic_score_dlq, key, encode(letter)),
        ]

    async def score(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The ScoreResponse of a validated request; fallbacks are answers, never exceptions."""
        started = time.perf_counter()
        model = self.active.model  # one model for the whole request, even if a reload lands meanwhile
        rows = await self.reader.read([c["driver_id"] for c in request["candidates"]])
        read_done = time.perf_counter()
        try:
            ranking = rank_request(request, rows, model, self.policy)
        except Exception:  # a bug must not leave the request unanswered
            log.exception("ranking request %s failed; answering distance-only", request["request_id"])
            candidates = request["candidates"]
            ranking = distance_only(candidates, SCORER_ERROR, ["missing"] * len(candidates), [])
        done = time.perf_counter()
        self._record(ranking, model is self.active.model, read_done - started, done - read_done)
        timings = {"features": _ms(read_done - started), "model": _ms(done - read_done), "total": _ms(done - started)}
        return score_response(request["request_id"], ranking.strategy, ranking.ranked, reason=ranking.reason,
                              model_version=model.version if model else None, timings_ms=timings)

    def _record(self, ranking: Ranking, same_model: bool, read_s: float, model_s: float) -> None:
        metrics.record_ranking(ranking, read_s, model_s)
        if same_model:
            self.drift.observe(ranking.risks)

    def close(self) -> None:
        """Stop the read pool (the store is closed by its owner)."""
        self.reader.close()


def _recover_request_id(raw: bytes | None) -> str | None:
    """The request_id of a malformed request when it is itself a valid id."""
    message, problems = decode_json(raw)
    if problems or not isinstance(message, dict) or message.get("request_id") is None:
        return None
    request_id, reason = REQUEST_ID.check(message["request_id"])
    return request_id if reason is None else None


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
