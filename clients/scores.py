"""The risk-score client: sends ScoreRequests and resolves each with the ScoreResponse of its request_id.

One consumer per client reads every partition of `risk-scores` from the end (no consumer group), and hands each
response to the request waiting for its id; responses to other clients' requests and duplicates of at-least-once
delivery are dropped. `RiskScoreClient` is for asyncio code, `BlockingRiskScoreClient` for threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from runtime.config import Settings
from runtime.kafka_clients import aiokafka_options, aiokafka_producer_options
from schemas.messages import decode_score_request, describe_problems, encode

Response = dict[str, Any]
REMEMBERED_ANSWERS = 100_000  # answered request_ids kept to tell a duplicate from someone else's response


class ScoreTimeout(TimeoutError):
    """No response to a request arrived within its timeout."""


class InvalidRequest(ValueError):
    """A ScoreRequest that breaks the contract; it was not sent."""


class RiskScoreClient:
    """`await client.score(request, timeout=…)`: the request goes to `score-requests`, its response comes back.

    Use it as `async with RiskScoreClient(settings) as client:`. Requests are validated before sending
    (`InvalidRequest`); the producer is `acks=all` and idempotent. `on_duplicate` sees each dropped duplicate.
    """

    def __init__(self, settings: Settings, *, on_duplicate: Callable[[Response], None] | None = None) -> None:
        self.settings = settings
        self.requests_topic, self.responses_topic = settings.topic_score_requests, settings.topic_risk_scores
        self.duplicates = 0
        self._on_duplicate = on_duplicate
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._answered: OrderedDict[str, float] = OrderedDict()  # request_id -> perf_counter at its response
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect; once this returns, every response produced from now on is seen."""
        # no group: start() waits for the topic's metadata and assigns every partition
        self._consumer = AIOKafkaConsumer(self.responses_topic, **aiokafka_options(self.settings), group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="latest", fetch_max_wait_ms=5)
        await self._consumer.start()
        for partition in self._consumer.assignment():  # resolve the end offsets now, before any request is sent
            await self._consumer.position(partition)
        self._producer = AIOKafkaProducer(**aiokafka_producer_options(self.settings), linger_ms=0)
        await self._producer.start()
        self._reader = asyncio.create_task(self._read(), name=f"responses-{self.responses_topic}")

    async def stop(self) -> None:
        """Disconnect; requests still waiting are cancelled."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        for client in (self._producer, self._consumer):
            if client is not None:
                await client.stop()
        self._producer = self._consumer = self._reader = None

    async def __aenter__(self) -> RiskScoreClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def score(self, request: Mapping[str, Any], timeout: float = 5.0) -> Response:
        """The ScoreResponse to `request`; `ScoreTimeout` when none arrives within `timeout` seconds."""
        future = await self.submit(request)
        return await self.response(request["request_id"], future, timeout)

    async def submit(self, request: Mapping[str, Any]) -> asyncio.Future[Response]:
        """Validate and send `request`; the returned future resolves with its response."""
        raw = encode(request)
        validated, problems = decode_score_request(raw)
        if validated is None:
            raise InvalidRequest(describe_problems(problems))
        request_id = validated["request_id"]
        future = self.expect(request_id)
        assert self._producer is not None, "start() the client first"
        delivery = await self._producer.send(self.requests_topic, raw, key=request_id.encode())
        delivery.add_done_callback(lambda sent: _fail_on_error(sent, future))
        return future

    def expect(self, request_id: str) -> asyncio.Future[Response]:
        """A future for the response to `request_id`, for a request sent some other way (register before sending)."""
        if request_id in self._pending:
            raise ValueError(f"a response to request {request_id!r} is already awaited")
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        future.add_done_callback(lambda done: self._forget(request_id, done))
        return future

    def _forget(self, request_id: str, future: asyncio.Future[Response]) -> None:
        """Stop waiting for `request_id` once its future is done (answered, timed out or cancelled)."""
        if self._pending.get(request_id) is future:
            del self._pending[request_id]

    async def response(self, request_id: str, future: asyncio.Future[Response], timeout: float) -> Response:
        """Wait for `future` (of `expect`/`submit`) at most `timeout` seconds."""
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ScoreTimeout(f"no response to request {request_id!r} on {self.responses_topic} within "
                               f"{timeout:g} s (is a scorer running on {self.requests_topic}?)") from None

    def received_at(self, request_id: str) -> float | None:
        """`time.perf_counter()` when the response to `request_id` was read (of the last 100 000 answered)."""
        return self._answered.get(request_id)

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    if record.key is not None:
                        self._deliver(record.key.decode("utf-8", "replace"), record.value)

    def _deliver(self, request_id: str, value: bytes | None) -> None:
        future = self._pending.pop(request_id, None)
        if future is None:
            if request_id in self._answered:
                self.duplicates += 1
                if self._on_duplicate is not None:
                    self._on_duplicate(orjson.loads(value or b"null"))
            return
        self._answered[request_id] = time.perf_counter()
        if len(self._answered) > REMEMBERED_ANSWERS:
            self._answered.popitem(last=False)
        if future.done():
            return
        try:
            future.set_result(orjson.loads(value or b"null"))
        except orjson.JSONDecodeError as exc:
            future.set_exception(ValueError(f"the response to request {request_id!r} is not JSON: {exc}"))


def _fail_on_error(delivery: asyncio.Future[Any], response: asyncio.Future[Response]) -> None:
    """Fail the response future when its request could not be delivered."""
    if not delivery.cancelled() and delivery.exception() is not None and not response.done():
        response.set_exception(delivery.exception())


class BlockingRiskScoreClient:
    """`RiskScoreClient` for threaded code: it runs on its own event loop thread; `close()` when done."""

    def __init__(self, settings: Settings, *, on_duplicate: Callable[[Response], None] | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="risk-score-client", daemon=True)
        self._thread.start()
        self.client = RiskScoreClient(settings, on_duplicate=on_duplicate)
        try:
            self._run(self.client.start(), timeout=60.0)
        except BaseException:
            self._stop_loop()
            raise

    @property
    def duplicates(self) -> int:
        """Duplicate responses dropped so far."""
        return self.client.duplicates

    def received_at(self, request_id: str) -> float | None:
        """`time.perf_counter()` when the response to `request_id` was read (of the last 100 000 answered)."""
        return self.client.received_at(request_id)

    def score(self, request: Mapping[str, Any], timeout: float = 5.0) -> Response:
        """The ScoreResponse to `request`; `ScoreTimeout` when none arrives within `timeout` seconds."""
        return self.submit(request, timeout).result()

    def submit(self, request: Mapping[str, Any], timeout: float = 30.0) -> concurrent.futures.Future[Response]:
        """Validate and send `request` now; the future resolves with its response (or `ScoreTimeout`)."""
        future = self._run(self.client.submit(request))
        return asyncio.run_coroutine_threadsafe(self.client.response(request["request_id"], future, timeout),
                                                self._loop)

    def expect(self, request_id: str, timeout: float = 30.0) -> concurrent.futures.Future[Response]:
        """A future for the response to `request_id` of a request sent some other way (call before sending)."""
        future = self._run(self._expect(request_id))
        return asyncio.run_coroutine_threadsafe(self.client.response(request_id, future, timeout), self._loop)

    async def _expect(self, request_id: str) -> asyncio.Future[Response]:
        return self.client.expect(request_id)

    def close(self) -> None:
        """Stop the client and its thread; requests still waiting are cancelled."""
        try:
            self._run(self.client.stop(), timeout=30.0)
        finally:
            self._stop_loop()

    def __enter__(self) -> BlockingRiskScoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def collect(pending: Mapping[str, concurrent.futures.Future[Response]], timeout: float,
            stall: float | None = None) -> dict[str, Response]:
    """The responses among `pending` (request_id -> `submit` future) that arrive within `timeout` seconds, or
    before `stall` seconds pass without a new one; failed and unanswered requests are left out."""
    deadline = time.monotonic() + timeout
    waiting = set(pending.values())
    while waiting and (left := deadline - time.monotonic()) > 0:
        done, waiting = concurrent.futures.wait(waiting, min(left, stall or left), concurrent.futures.FIRST_COMPLETED)
        if not done:
            break
    return {rid: f.result() for rid, f in pending.items() if f.done() and not f.cancelled() and not f.exception()}
