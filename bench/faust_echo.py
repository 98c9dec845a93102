"""The Faust floor for `bench/scorer.py --floor`: the scorer's own Faust app and agent, answering without scoring.

`scorer.app.faust_app` with a handler that returns a fixed small answer: the same settings, batches, manual ack after
delivery, direct producer send and switch interval, so it shows what one worker costs per request before any
scoring. The benchmark runs it as `python -m faust -A bench.faust_echo worker` with `TRIPSCORE_*` settings.
"""

from __future__ import annotations

from collections.abc import Sequence

from faust.web import Request, Response, View

from runtime.config import load_settings
from scorer.app import faust_app
from scorer.service import Incoming, Outgoing

ANSWER = b'{"strategy":"echo"}'

settings = load_settings()


async def answer(inputs: Sequence[Incoming]) -> list[list[Outgoing]]:
    return [[Outgoing(settings.topic_risk_scores, incoming.key, ANSWER)] for incoming in inputs]


app = faust_app(settings, answer)


@app.page("/health")
async def health(web: View, request: Request) -> Response:
    return web.json({"status": "ok"})
