"""The Faust scoring worker: `score-requests` → Scorer → `risk-scores`, plus /metrics, /health, /drift.png.

Run it with `tripscore score` or `faust -A scorer.app worker` (settings from `TRIPSCORE_*`).

Delivery is at-least-once. The agent iterates without automatic acks and acks a request only after the
broker has acknowledged its response (and DeadLetter); Faust commits only offsets below the first
unacked one, so a crash before the response is delivered redelivers the request after restart. A
redelivered request can be answered twice; ranking depends only on the request (its `ts` is the
scoring time) and the stored features, so the same state gives the same ranking.

Malformed requests get a `strategy: "error"` response on `risk-scores` and a DeadLetter (stage
`score`) on `TRIPSCORE_TOPIC_SCORE_DLQ`, by default the spec's one dead-letter topic `trip-events-dlq`.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from featurestore import close_stores, open_store
from runtime.config import Settings, load_settings
from runtime.kafka_clients import faust_options
from runtime.topics import default_replication_factor
from scorer import metrics
from scorer.membership import claim_instance_id
from scorer.reader import resolve_mode
from scorer.service import Incoming, Origin, Outgoing, Scorer
from scorer.transport import DurableApp

log = logging.getLogger(__name__)
SWITCH_INTERVAL_S = 0.0005
MIN_BATCH_WAIT_MS = 0.1  # Faust's batching waits for a full batch when given no wait at all


BatchHandler = Callable[[Sequence[Incoming]], Awaitable[list[list[Outgoing]]]]
"""Consumed requests to the messages that answer each of them, in order."""


def faust_app(settings: Settings, handle: BatchHandler) -> faust.App:
    """The Faust app with the worker's broker, group and producer settings, its web server on
    `TRIPSCORE_WEB_BIND`, and its agent on `settings.topic_score_requests`: `handle` answers the requests taken
    within `scorer_batch_wait_ms` together (at most `scorer_batch_max`), each acked once the broker has its answers."""
    datadir = settings.home / "faust" / settings.scorer_app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = DurableApp(
        settings.scorer_app_id,
        **faust_options(settings),
        store="memory://",
        datadir=str(datadir),
        web_bind=settings.web_bind,
        web_port=settings.scorer_web_port,
        broker_commit_interval=settings.scorer_commit_interval_s,
        broker_session_timeout=settings.scorer_session_timeout_s,
        consumer_group_instance_id=settings.scorer_instance_id or claim_instance_id(datadir.parent / "members"),
        producer_linger_ms=0,
        topic_replication_factor=default_replication_factor(settings),  # its own topics survive a broker
    )
    requests = app.topic(settings.topic_score_requests, key_serializer="raw", value_serializer="raw")
    limit = settings.scorer_batch_max
    within = max(settings.scorer_batch_wait_ms, MIN_BATCH_WAIT_MS) / 1000.0

    @app.agent(requests, concurrency=settings.scorer_concurrency)
    async def score(stream: faust.StreamT) -> None:
        # Faust's own batching, without its acks: the requests taken within `within` (fewer if `limit` is reached
        # first); it skips what a rebalance made stale, as its iterator does
        async for events in stream.noack_take(limit, within):
            await _answer(app, stream, handle, events)

    @app.task
    async def shorten_switch_interval() -> None:
        # Faust's consumer runs in its own thread: each request crosses threads, and a thread waiting for the GIL
        # waits up to the switch interval (5 ms by default). 0.5 ms cut p50 at 200 req/s from 37 to 17 ms here.
        sys.setswitchinterval(SWITCH_INTERVAL_S)

    return app


async def _answer(app: faust.App, stream: faust.StreamT, handle: BatchHandler, events: Sequence[faust.EventT]) -> None:
    """Produce the answers of a batch; each request is acked when the broker has all of its answers."""
    received = time.perf_counter()
    answers = await _handle_guarded(handle, [Incoming(event.value, event.key, Origin(
        event.message.topic, event.message.partition, event.message.offset), event.message.time_in)
        for event in events])  # time_in: Faust's monitor stamps each message with time.monotonic() on arrival
    for event, outgoing in zip(events, answers, strict=True):
        if outgoing is None:
            continue
        try:
            # the producer itself, not Topic.send: the bytes are final, and Faust's per-message wrapping is skipped
            pending = [await app.producer.send(out.topic, out.key, out.value, None, None, None) for out in outgoing]
        except Exception:  # the agent outlives any one request; this one stays unacked (redelivered on restart)
            log.exception("request at %s offset %s not answered", event.message.tp, event.message.offset)
            continue
        delivered = asyncio.gather(*pending)
        delivered.add_done_callback(functools.partial(_acknowledge, stream, event, received))


async def _handle_guarded(handle: BatchHandler, inputs: list[Incoming]) -> list[list[Outgoing] | None]:
    """`handle(inputs)`; should it raise, each input alone: a failing one gets None (stays unacked), not its batch."""
    try:
        return await handle(inputs)
    except Exception:  # the agent outlives any one request
        if len(inputs) > 1:
            return [(await _handle_guarded(handle, [incoming]))[0] for incoming in inputs]
        origin = inputs[0].origin
        log.exception("request at %s[%s] offset %s not answered", origin.topic, origin.partition, origin.offset)
        return [None]


def build_app(settings: Settings, drift_plot: Path | None = None) -> faust.App:
    """A Faust app scoring `settings.topic_score_requests` with `settings.scorer_concurrency` actors;
    `drift_plot` names a PNG of live vs training scores written at shutdown."""
    resolve_mode(settings.scorer_read_mode, "")  # a bad TRIPSCORE_SCORER_READ_MODE fails here, not per request

    @functools.cache
    def scorer() -> Scorer:
        service = Scorer(settings, open_store(settings))
        log.info("scorer ready: model %s, read mode %s, concurrency %d, batches of up to %d within %.1f ms, "
                 "deadline %.0f ms", service.active.version, service.reader.mode, settings.scorer_concurrency,
                 settings.scorer_batch_max, settings.scorer_batch_wait_ms, settings.store_deadline_ms)
        return service

    async def handle(inputs: Sequence[Incoming]) -> list[list[Outgoing]]:
        metrics.BATCH_SIZE.observe(len(inputs))
        return await scorer().handle_batch(inputs)

    app = faust_app(settings, handle)

    @app.task
    async def start_scorer() -> None:
        scorer()
        gc.collect()
        gc.freeze()  # start-up objects leave the collector, so its full passes stay short on the request path

    @app.timer(interval=settings.model_poll_s)
    async def poll_model() -> None:
        scorer().poll_model()

    @app.page("/metrics")
    async def metrics_page(web: View, request: Request) -> Response:
        return web.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/health")
    async def health_page(web: View, request: Request) -> Response:
        service = scorer()
        store = await asyncio.get_running_loop().run_in_executor(None, service.reader.store.health)
        ok = bool(store.get("ok")) and service.active.model is not None
        body = {"status": "ok" if ok else "degraded", "model_version": service.active.version, "store": store,
                "read_mode": service.reader.mode, "concurrency": settings.scorer_concurrency, "pid": os.getpid(),
                "partitions": sorted(tp.partition for tp in app.consumer.assignment()
                                     if tp.topic == settings.topic_score_requests)}
        return web.json(body, status=200 if ok else 503)

    @app.page("/drift.png")
    async def drift_page(web: View, request: Request) -> Response:
        service = scorer()
        return web.bytes(service.drift.plot_png(service.active.version), content_type="image/png")

    @app.on_before_shutdown.connect
    async def shutdown(sender: faust.App, **kwargs: Any) -> None:
        if scorer.cache_info().currsize:
            service = scorer()
            if drift_plot:
                drift_plot.write_bytes(service.drift.plot_png(service.active.version))
                log.info("wrote the drift plot to %s", drift_plot)
            service.close()
        close_stores()

    return app


def _acknowledge(stream: faust.StreamT, event: faust.EventT, received: float, delivered: asyncio.Future) -> None:
    """Ack a request whose response is on the broker; an undelivered one stays unacked (redelivered on restart)."""
    if delivered.cancelled() or delivered.exception() is not None:
        log.error("response to the request at %s offset %s not delivered (%s); it stays uncommitted",
                  event.message.tp, event.message.offset, "cancelled" if delivered.cancelled() else
                  delivered.exception())
        return
    asyncio.ensure_future(stream.ack(event))
    metrics.PROCESSING.observe(time.perf_counter() - received)
    metrics.END_TO_END.observe(max(0.0, time.time() - event.message.timestamp))


def __getattr__(name: str) -> faust.App:
    """`scorer.app.app`, built from the environment on first use (what `faust -A scorer.app` loads)."""
    if name != "app":
        raise AttributeError(name)
    globals()["app"] = built = build_app(load_settings())
    return built
