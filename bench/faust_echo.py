"""The Faust floor for `bench/scorer.py --floor`: the scorer's agent shape, answering without scoring.

Same app settings, manual ack after delivery, direct producer send and GIL switch interval as `scorer.app`;
each request gets a fixed small answer. It shows what one worker costs per request before any scoring.
The benchmark runs it as `python -m faust -A bench.faust_echo worker` with `TRIPSCORE_*` settings.
"""

from __future__ import annotations

import asyncio
import functools
import sys

import faust
from faust.web import Request, Response, View

from scorer.app import RAW, SWITCH_INTERVAL_S, faust_app
from tripscore.config import load_settings

ANSWER = b'{"strategy":"echo"}'

settings = load_settings()
app = faust_app(settings)
requests = app.topic(settings.topic_score_requests, **RAW)


def _ack(stream: faust.StreamT, event: faust.EventT, delivered: asyncio.Future) -> None:
    if not delivered.cancelled() and delivered.exception() is None:
        asyncio.ensure_future(stream.ack(event))


@app.agent(requests, concurrency=settings.scorer_concurrency)
async def echo(stream: faust.StreamT) -> None:
    manual = stream.noack()
    async for event in manual.events():
        delivered = await app.producer.send(settings.topic_risk_scores, event.key, ANSWER, None, None, None)
        delivered.add_done_callback(functools.partial(_ack, manual, event))


@app.task
async def tune() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL_S)


@app.page("/health")
async def health(web: View, request: Request) -> Response:
    return web.json({"status": "ok"})
