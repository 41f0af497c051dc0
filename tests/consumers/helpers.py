"""Publishing test events with plain aiokafka, and running a projection worker until it has caught up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer

from consumers.worker import ProjectionWorker
from schemas import (
    TOPIC_BY_EVENT,
    AttemptEndStatus,
    AttemptFinished,
    AttemptHeartbeat,
    AttemptStarted,
    Event,
    RolloutCancelled,
    RolloutConfig,
    RolloutEnqueued,
    RolloutRequeued,
    encode,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def lifecycle(i: int, *, outcome: AttemptEndStatus = "succeeded", t: float = 0.0) -> list[Event]:
    """A rollout enqueued, one attempt started, a heartbeat, and its end."""
    rid, aid = f"ro-{i:05d}", f"at-{i:05d}-1"
    return [
        RolloutEnqueued(rollout_id=rid, input={"n": i}, mode="train", occurred_at=at(t)),
        AttemptStarted(rollout_id=rid, attempt_id=aid, sequence_id=1, worker_id="w1", occurred_at=at(t + 1)),
        AttemptHeartbeat(rollout_id=rid, attempt_id=aid, worker_id="w1", occurred_at=at(t + 2)),
        AttemptFinished(rollout_id=rid, attempt_id=aid, status=outcome, occurred_at=at(t + 3)),
    ]


def retrying(i: int) -> list[Event]:
    rid = f"ro-{i:05d}"
    config = RolloutConfig(max_attempts=2, retry_condition=("failed",))
    return [
        RolloutEnqueued(rollout_id=rid, input=i, config=config, occurred_at=at(0)),
        AttemptStarted(rollout_id=rid, attempt_id=f"at-{i}-1", sequence_id=1, occurred_at=at(1)),
        AttemptFinished(rollout_id=rid, attempt_id=f"at-{i}-1", status="failed", occurred_at=at(2)),
    ]


def requeued_twice(i: int) -> list[Event]:
    """Two failed attempts, each requeued: the rollout is queuing again (a copy of the first requeue would not be)."""
    rid = f"ro-{i:05d}"
    config = RolloutConfig(max_attempts=3, retry_condition=("failed",))
    events: list[Event] = [RolloutEnqueued(rollout_id=rid, input=i, config=config, occurred_at=at(0))]
    for n in (1, 2):
        aid = f"at-{i}-{n}"
        events += [
            AttemptStarted(rollout_id=rid, attempt_id=aid, sequence_id=n, occurred_at=at(3 * n)),
            AttemptFinished(rollout_id=rid, attempt_id=aid, status="failed", occurred_at=at(3 * n + 1)),
            RolloutRequeued(rollout_id=rid, after_attempt_id=aid, occurred_at=at(3 * n + 2)),
        ]
    return events


def cancelled(i: int) -> list[Event]:
    rid = f"ro-{i:05d}"
    return [
        RolloutEnqueued(rollout_id=rid, input=i, occurred_at=at(0)),
        RolloutCancelled(rollout_id=rid, occurred_at=at(1)),
    ]


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
