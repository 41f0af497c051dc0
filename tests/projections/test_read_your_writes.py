"""``?after=`` waits: woken by the apply's NOTIFY, holding no pooled connection, still bounded (503).

The API runs in-process with its real lifespan (pool, Kafka client, applied listener); the rollouts projection
worker applies real records from Kafka into PostgreSQL. Each test first lets the worker create the projection's
generation, then stops it, publishes, starts a waiting read, and only then applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager

from agl.app import create_app
from agl.config import Settings
from consumers.worker import ProjectionWorker
from projections.applied import APPLICATION_NAME, CHANNEL, AppliedListener
from projections.rollouts import PROJECTION as ROLLOUTS
from schemas import parse_token
from tests.consumers.helpers import lifecycle, running, wait_for_total
from tests.projections.test_routes import publish_with_token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

#: Longer than any test here: a read answered in time was woken by a notification, not by the fallback poll.
NEVER_S = 60.0
#: How soon after the apply's commit a woken read must have answered (the poll fallback would take seconds).
WAKE_BOUND_S = 0.5


@contextlib.asynccontextmanager
async def serving(bootstrap: str, prefix: str, pg_url: str, **settings: Any) -> AsyncIterator[tuple[FastAPI, Any]]:
    app = create_app(Settings(kafka_bootstrap=bootstrap, database_url=pg_url, topic_prefix=prefix, **settings))
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=60) as client,
    ):
        yield app, client


def worker(bootstrap: str, pg_url: str, prefix: str) -> ProjectionWorker:
    return ProjectionWorker(ROLLOUTS, bootstrap=bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False)


async def started_projection(bootstrap: str, prefix: str, pg_url: str) -> None:
    """Run the worker over one rollout, so the active generation exists; the worker is stopped on return."""
    async with running(worker(bootstrap, pg_url, prefix)):
        await publish_with_token(bootstrap, prefix, lifecycle(1))
        await wait_for_total(pg_url, "rollouts_g1", len(lifecycle(1)))


async def applied_at(pg_url: str, prefix: str, token: str, timeout_s: float = 60.0) -> float:
    """The monotonic time the projection's stored positions first covered ``token`` (checked every 5 ms)."""
    topics = set(ROLLOUTS.topic_names(prefix))
    wanted = {(p.topic, p.partition): p.offset for p in parse_token(token) if p.topic in topics}
    deadline = time.monotonic() + timeout_s
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            cur = await conn.execute(
                "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = 'rollouts_g1'"
            )
            stored = {(t, p): o for t, p, o in await cur.fetchall()}
            if all(stored.get(tp, 0) > offset for tp, offset in wanted.items()):
                return time.monotonic()
            await asyncio.sleep(0.005)
    raise AssertionError(f"the projection did not apply {token} within {timeout_s}s")


async def listener_pids(pg_url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            (APPLICATION_NAME,),
        )
        return [int(row[0]) for row in await cur.fetchall()]


async def until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def assert_woken_by_the_apply(client: Any, bootstrap: str, prefix: str, pg_url: str, rollout: int) -> None:
    """A read waiting for a new rollout answers within WAKE_BOUND_S of the commit that applied it."""
    token = await publish_with_token(bootstrap, prefix, lifecycle(rollout))
    path = f"/v1/rollouts/ro-{rollout:05d}"
    read = asyncio.create_task(client.get(path, params={"after": token, "wait_ms": 30_000}))
    await asyncio.sleep(0.5)
    assert not read.done(), "the read answered before the projection applied its token"
    async with running(worker(bootstrap, pg_url, prefix)):
        committed = await applied_at(pg_url, prefix, token)
        answer = await read
        answered = time.monotonic()
    assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
    assert answered - committed < WAKE_BOUND_S


async def test_a_waiting_read_is_woken_by_the_apply_not_by_a_poll(kafka_bootstrap, kafka_topics, pg_url):
    async with serving(kafka_bootstrap, kafka_topics, pg_url) as (app, client):
        await started_projection(kafka_bootstrap, kafka_topics, pg_url)
        assert app.state.applied.listening
        app.state.applied.fallback_poll_s = NEVER_S  # so only the NOTIFY can answer the read in time
        await assert_woken_by_the_apply(client, kafka_bootstrap, kafka_topics, pg_url, 2)


async def test_a_waiting_read_holds_no_pooled_connection(kafka_bootstrap, kafka_topics, pg_url):
    # One pooled connection, given up after 1 s: a wait that held it would make every other read a 503.
    async with serving(kafka_bootstrap, kafka_topics, pg_url, api_pool_size=1, api_pool_timeout_s=1) as (_, client):
        await started_projection(kafka_bootstrap, kafka_topics, pg_url)
        token = await publish_with_token(kafka_bootstrap, kafka_topics, lifecycle(2))
        waiting = asyncio.create_task(client.get("/v1/rollouts/ro-00002", params={"after": token, "wait_ms": 30_000}))
        await asyncio.sleep(0.3)
        for _ in range(3):
            other = await client.get("/v1/rollouts/ro-00001")
            assert other.status_code == 200 and other.json()["status"] == "succeeded"
            await asyncio.sleep(0.5)
        assert not waiting.done(), "the waiting read answered before its token was applied"
        async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
            answer = await waiting
        assert answer.status_code == 200 and answer.json()["status"] == "succeeded"


async def test_a_wait_that_times_out_still_answers_503_on_time(kafka_bootstrap, kafka_topics, pg_url):
    async with serving(kafka_bootstrap, kafka_topics, pg_url) as (app, client):
        await started_projection(kafka_bootstrap, kafka_topics, pg_url)
        app.state.applied.fallback_poll_s = NEVER_S  # the deadline, not a poll, ends the wait
        token = await publish_with_token(kafka_bootstrap, kafka_topics, lifecycle(2))  # never applied
        began = time.monotonic()
        answer = await client.get("/v1/rollouts", params={"after": token, "wait_ms": 300})
        assert 0.3 <= time.monotonic() - began < 2.0
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert "has not applied the requested position within 0.3s" in answer.json()["detail"]


async def test_without_its_listener_a_read_falls_back_to_polling(kafka_bootstrap, kafka_topics, pg_url):
    async with serving(kafka_bootstrap, kafka_topics, pg_url) as (app, client):
        await started_projection(kafka_bootstrap, kafka_topics, pg_url)
        applied = app.state.applied
        await applied.stop()
        assert not applied.listening
        applied.fallback_poll_s = 0.2
        token = await publish_with_token(kafka_bootstrap, kafka_topics, lifecycle(2))
        read = asyncio.create_task(client.get("/v1/rollouts/ro-00002", params={"after": token, "wait_ms": 30_000}))
        async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
            committed = await applied_at(pg_url, kafka_topics, token)
            answer = await read
            answered = time.monotonic()
        assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
        assert answered - committed < 0.2 + WAKE_BOUND_S


async def test_a_lost_listener_connection_is_replaced(kafka_bootstrap, kafka_topics, pg_url):
    async with serving(kafka_bootstrap, kafka_topics, pg_url) as (app, client):
        await started_projection(kafka_bootstrap, kafka_topics, pg_url)
        applied = app.state.applied
        (old,) = await listener_pids(pg_url)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("SELECT pg_terminate_backend(%s)", (old,))

        async def replaced() -> bool:
            return applied.listening and (await listener_pids(pg_url)) not in ([], [old])

        await until(replaced)
        applied.fallback_poll_s = NEVER_S
        await assert_woken_by_the_apply(client, kafka_bootstrap, kafka_topics, pg_url, 2)


async def test_reads_woken_by_one_notification_share_one_query(pg_url):
    calls = 0

    async def read() -> int:
        nonlocal calls
        calls += 1
        mine = calls
        await asyncio.sleep(0.2)
        return mine

    async with AppliedListener(pg_url) as applied:
        assert applied.listening
        since = applied.mark()
        assert await asyncio.gather(*(applied.shared("rollouts", since, read) for _ in range(20))) == [1] * 20
        # A read begun before a notification cannot answer a waiter marked after it: that one reads anew.
        older = asyncio.create_task(applied.shared("rollouts", applied.mark(), read))
        await asyncio.sleep(0.05)
        before = applied.mark()
        waiter = asyncio.create_task(applied.wait("rollouts_g1", before, NEVER_S))
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "rollouts_g1"))
        await asyncio.wait_for(waiter, 5)  # woken by the notification, long before NEVER_S
        assert applied.mark() > before
        assert await applied.shared("rollouts", applied.mark(), read) == 3
        assert await older == 2
