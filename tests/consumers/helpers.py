"""Publishing test events with plain aiokafka, and running a projection worker until it has caught up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer

from consumers.worker import ProjectionWorker
from schemas import TOPIC_BY_EVENT, AttemptEndStatus, Event, RolloutConfig, encode
from tests.fixtures.histories import T0, at, history  # noqa: F401 - T0 and at are used through this module


def lifecycle(i: int, *, outcome: AttemptEndStatus = "succeeded", t: float = 0.0) -> list[Event]:
    """A rollout enqueued, claimed, running, a heartbeat, and its end: the events the decider records."""
    h = history(f"ro-{i:05d}", t=t, input={"n": i}, mode="train").claim("w1").running().heartbeat()
    if outcome in ("succeeded", "failed"):
        h.finish(outcome)
    elif outcome == "cancelled":
        h.cancel()
    else:
        h.expire(outcome)  # type: ignore[arg-type]  # the rest: timeout, unresponsive
    return h.events


def retrying(i: int) -> list[Event]:
    """A failed first attempt with a retry left: the rollout is requeuing."""
    config = RolloutConfig(max_attempts=2, retry_condition=("failed",))
    return history(f"ro-{i:05d}", config, input=i).claim().running().finish("failed").events


def requeued_twice(i: int) -> list[Event]:
    """Two failed attempts, each requeued: the rollout is requeuing for its third attempt."""
    config = RolloutConfig(max_attempts=3, retry_condition=("failed",))
    h = history(f"ro-{i:05d}", config, input=i)
    for _ in (1, 2):
        h.claim().running().finish("failed")
    return h.events


def cancelled(i: int) -> list[Event]:
    return history(f"ro-{i:05d}", input=i).cancel().events


async def publish(bootstrap: str, prefix: str, events: list[Event]) -> None:
    async with AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5) as producer:
        futures = []
        for event in events:
            value, headers = encode(event)
            topic = TOPIC_BY_EVENT[type(event)].full_name(prefix)
            futures.append(await producer.send(topic, value, key=event.key(), headers=headers))
        await asyncio.gather(*futures)


async def publish_raw(
    bootstrap: str, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]] | None = None
) -> None:
    async with AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all") as producer:
        await producer.send_and_wait(topic, value, key=key, headers=headers or [])


async def stored_total(pg_url: str, consumer: str) -> int:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM projection_offsets WHERE projection = %s", (consumer,)
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def wait_for_total(pg_url: str, consumer: str, total: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (now := await stored_total(pg_url, consumer)) < total:
        if time.monotonic() > deadline:
            raise AssertionError(f"{consumer} reached {now} of {total} records within {timeout}s")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(worker: ProjectionWorker):
    """Run ``worker`` in the background for the duration of the block."""
    stop = asyncio.Event()
    await worker.start()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            await worker.stop()


async def fetch_all(pg_url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()
