"""The second floor of `bench/scorer.py`: a bare aiokafka consumer and producer that answers every request with a
fixed message, without Faust, so the framework's own cost per request is on record.

Same delivery as the scorer: a request's offset is committed (every `scorer_commit_interval_s`) only once the
broker has its answer. Run as `python bench/aiokafka_echo.py` with `TRIPSCORE_*` settings.
"""

# ruff: noqa: E402 - the path fix below must run before the project imports

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository root, not bench/

import asyncio
import signal
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from runtime.config import Settings, load_settings
from runtime.kafka_clients import aiokafka_options

ANSWER = b'{"strategy":"echo"}'


async def echo(settings: Settings, stop: asyncio.Event) -> None:
    """Answer `score-requests` on `risk-scores` until `stop` is set."""
    consumer = AIOKafkaConsumer(settings.topic_score_requests, **aiokafka_options(settings),
                                group_id=settings.scorer_app_id, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                session_timeout_ms=int(settings.scorer_session_timeout_s * 1000))
    producer = AIOKafkaProducer(**aiokafka_options(settings), linger_ms=0)
    await consumer.start()
    await producer.start()
    delivered: dict[TopicPartition, int] = {}
    committed_at = time.monotonic()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            pending = [await producer.send(settings.topic_risk_scores, ANSWER, key=record.key)
                       for records in batches.values() for record in records]
            await asyncio.gather(*pending)
            delivered.update({tp: records[-1].offset + 1 for tp, records in batches.items()})
            if delivered and time.monotonic() - committed_at >= settings.scorer_commit_interval_s:
                await consumer.commit(dict(delivered))
                delivered.clear()
                committed_at = time.monotonic()
    finally:
        await producer.stop()
        if delivered:
            await consumer.commit(dict(delivered))
        await consumer.stop()


def main() -> int:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.run_until_complete(echo(load_settings(), stop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
