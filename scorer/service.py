"""Requests from raw bytes to outgoing messages, one or a batch at a time: validate, read features, rank, respond."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from featurestore.base import FeatureMatrix, OnlineStore
from modelregistry.export import ModelExport
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
from scorer.rank import NO_AGES, SCORER_ERROR, STORE_TIMEOUT, Policy, Ranking, distance_only, rank_requests
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


class Incoming(NamedTuple):
    """One consumed input: its raw value, key and origin, and when it reached the scorer."""

    raw: bytes | None
    key: bytes | None
    origin: Origin
    arrived: float | None = None  # `time.monotonic()` at its arrival (Faust's `time_in`); None: when handled


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

    async def handle(self, raw: bytes | None, key: bytes | None, origin: Origin,
                     arrived: float | None = None) -> list[Outgoing]:
        """The response (plus a DeadLetter for a malformed request) to produce for one input; never raises."""
        return (await self.handle_batch([Incoming(raw, key, origin, arrived)]))[0]

    async def handle_batch(self, inputs: Sequence[Incoming]) -> list[list[Outgoing]]:
        """The messages answering each input, in order: the valid requests share one store read and one model
        call; each input still gets its own answer (an `error` plus DeadLetter when it fails). Never raises."""
        now = time.monotonic()
        decoded = [decode_score_request(incoming.raw) for incoming in inputs]
        valid = [request for request, _ in decoded if request is not None]
        arrived = [now if incoming.arrived is None else incoming.arrived
                   for incoming, (request, _) in zip(inputs, decoded, strict=True) if request is not None]
        outcomes = iter(await self._score_guarded(valid, arrived) if valid else ())
        return [self._answer(incoming, request, next(outcomes)) if request is not None else
                self._reject(incoming, problems) for incoming, (request, problems) in zip(inputs, decoded, strict=True)]

    async def _score_guarded(self, requests: list[dict[str, Any]], arrived: list[float],
                             ) -> list[dict[str, Any] | Exception]:
        """`score_batch`, or when it raises, each request scored alone: a bug costs only its own request."""
        try:
            return await self.score_batch(requests, arrived)
        except Exception as exc:  # the per-request guard: a bug answers this request, it never stops the agent
            if len(requests) == 1:
                return [exc]
            return [(await self._score_guarded([request], [at]))[0]
                    for request, at in zip(requests, arrived, strict=True)]

    def _answer(self, incoming: Incoming, request: dict[str, Any], outcome: dict[str, Any] | Exception,
                ) -> list[Outgoing]:
        """The encoded response to a valid request, or its `error` answer when scoring or encoding failed."""
        try:
            if isinstance(outcome, Exception):
                raise outcome
            return [Outgoing(self.settings.topic_risk_scores, request["request_id"].encode(), encode(outcome))]
        except Exception as exc:
            log.exception("request %r failed", request["request_id"])
            return self._reject(incoming, [(MESSAGE, f"could not be scored: {type(exc).__name__}: {exc}")])

    def _reject(self, incoming: Incoming, problems: list[Problem]) -> list[Outgoing]:
        """An `error` answer (keyed by the request id when one can be read) and the input's DeadLetter."""
        raw, key, origin = incoming.raw, incoming.key, incoming.origin
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

    async def score_batch(self, requests: Sequence[Mapping[str, Any]], arrived: Sequence[float] | None = None,
                          ) -> list[dict[str, Any]]:
        """The ScoreResponse of each validated request (which reached the scorer at `arrived`, `time.monotonic`;
        default now): one store read for all their candidates within what is left of each one's deadline, one
        model call; a request with nothing left falls back unread. Fallbacks are answers, never exceptions."""
        started = time.perf_counter()
        model = self.active.model  # one model for the whole batch, even if a reload lands meanwhile
        budgets = [self.reader.budget(at) for at in arrived] if arrived else [self.reader.deadline_s] * len(requests)
        reading = [request for request, budget in zip(requests, budgets, strict=True) if budget > 0]
        read = await self.reader.read([c["driver_id"] for request in reading for c in request["candidates"]],
                                      min(budget for budget in budgets if budget > 0)) if reading else STORE_TIMEOUT
        read_done = time.perf_counter()
        reads = iter(_split(read, reading))
        rankings = self._rank(requests, [next(reads) if budget > 0 else STORE_TIMEOUT for budget in budgets], model)
        done = time.perf_counter()
        same_model = model is self.active.model
        timings = {"features": _ms(read_done - started), "model": _ms(done - read_done), "total": _ms(done - started)}
        responses = []
        for request, ranking in zip(requests, rankings, strict=True):
            self._record(ranking, same_model, read_done - started, done - read_done)
            responses.append(score_response(request["request_id"], ranking.strategy, ranking.ranked,
                                            reason=ranking.reason, model_version=model.version if model else None,
                                            timings_ms=timings))
        return responses

    def _rank(self, requests: Sequence[Mapping[str, Any]], reads: list[FeatureMatrix | str],
              model: ModelExport | None) -> list[Ranking]:
        """`rank_requests`, or when it raises, each request alone; a request whose ranking fails is answered
        distance-only (`scorer_error`)."""
        try:
            return rank_requests(requests, reads, model, self.policy)
        except Exception:  # a bug or an unreadable record must not leave the request unanswered
            if len(requests) > 1:
                return [self._rank([request], [read], model)[0] for request, read in zip(requests, reads, strict=True)]
            log.exception("ranking request %s failed; answering distance-only", requests[0]["request_id"])
            candidates = requests[0]["candidates"]
            return [distance_only(candidates, SCORER_ERROR, ["missing"] * len(candidates), NO_AGES)]

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


def _split(read: FeatureMatrix | str, requests: Sequence[Mapping[str, Any]]) -> list[FeatureMatrix | str]:
    """Each request's part of one batch read (a failure reason applies to every request)."""
    if isinstance(read, str):
        return [read] * len(requests)
    if len(requests) == 1:
        return [read]
    out, start = [], 0
    for request in requests:
        end = start + len(request["candidates"])
        out.append(read.rows(start, end))
        start = end
    return out


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
