"""Two outbox relays on one database (an API's and the watchdog's): the elected one publishes, and a command that
waits beside the other learns its rows' positions from the NOTIFYs alone, however many arrive at once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from producers import outbox
from producers.idempotency import migrate_commands
from producers.outbox import PENDING_CHANNEL, OutboxRelay
from producers.publisher import EventPublisher
from schemas.topics import ROLLOUTS
from tests.fixtures.events import make_rollout_enqueued

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

#: Longer than the waits below: a position that arrives came from a NOTIFY, not from a poll.
NEVER_POLL_S = 600.0


def blocking(work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``work`` on a loop of its own in another thread, holding this one's loop until it ends."""
    # .result() blocks this thread (so its loop) and raises what the work raised.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work()).result()


async def test_a_waiter_beside_the_leader_hears_a_publication_among_other_notifications(
    kafka_bootstrap: str, kafka_topics: str, pg_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await migrate_commands(conn)
    leading, stop = threading.Event(), threading.Event()

    async def lead() -> None:
        # The other process's relay (a thread with a loop of its own): it publishes while this loop is held.
        async with (
            EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics) as publisher,
            OutboxRelay(pg_url, publisher, poll_s=NEVER_POLL_S) as relay,
        ):
            while not stop.is_set():
                if relay.is_leader:
                    leading.set()
                await asyncio.sleep(0.02)

    leader = threading.Thread(target=asyncio.run, args=(lead(),))
    leader.start()
    try:
        assert await asyncio.to_thread(leading.wait, 30), "the leader did not take the relay lock"
        async with (
            EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics) as publisher,
            OutboxRelay(pg_url, publisher, poll_s=NEVER_POLL_S) as follower,
            AsyncConnectionPool(pg_url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool,
        ):
            await asyncio.sleep(0.5)  # the follower listens

            async def commit() -> list[int]:
                async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                    await conn.execute("SELECT pg_notify(%s, '')", (PENDING_CHANNEL,))
                    async with conn.transaction():
                        ids = await outbox.append(conn, publisher, [make_rollout_enqueued() for _ in range(3)])
                    for _ in range(500):  # until the leader has published them (and said so)
                        cur = await conn.execute("SELECT bool_and(published) FROM outbox WHERE id = ANY(%s)", (ids,))
                        if (row := await cur.fetchone()) and row[0]:
                            return ids
                        await asyncio.sleep(0.02)
                raise AssertionError("the leader did not publish")

            # While this loop (the follower's) is held, its listener's socket gathers a notification of new rows, the
            # rows' own, and the leader's "published": one read takes them all. A listener that kept only the first
            # of a read left the waiter below to its poll.
            ids = blocking(commit)
            positions = await asyncio.wait_for(follower.wait_published(pool, ids, NEVER_POLL_S), 10.0)
            assert not follower.is_leader
            assert {p.topic for p in positions} == {ROLLOUTS.full_name(kafka_topics)}
            assert len({(p.partition, p.offset) for p in positions}) == len(ids)
    finally:
        stop.set()
        await asyncio.to_thread(leader.join, 30)


class CountingRelay(OutboxRelay):
    """A relay that counts its tries at the relay lock."""

    tries = 0

    async def _try_lead(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        self.tries += 1
        return await super()._try_lead(conn)


async def _commit_rows(pg_url: str, publisher: EventPublisher, commits: int) -> list[int]:
    """``commits`` transactions of one outbox row each (each NOTIFYs the relays), and their ids."""
    ids: list[int] = []
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        for _ in range(commits):
            async with conn.transaction():
                ids += await outbox.append(conn, publisher, [make_rollout_enqueued()])
    return ids


@contextlib.asynccontextmanager
async def _commands(
    kafka_bootstrap: str, kafka_topics: str, pg_url: str
) -> AsyncIterator[tuple[EventPublisher, AsyncConnectionPool[Any]]]:
    """The command tables, a publisher and a pool, as a command API process has them."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await migrate_commands(conn)
    async with (
        EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics) as publisher,
        AsyncConnectionPool(pg_url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool,
    ):
        yield publisher, pool


async def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_follower_asks_for_the_lock_once_per_poll_interval_not_at_every_commit(
    kafka_bootstrap: str, kafka_topics: str, pg_url: str
) -> None:
    async with (
        _commands(kafka_bootstrap, kafka_topics, pg_url) as (publisher, pool),
        OutboxRelay(pg_url, publisher, poll_s=NEVER_POLL_S) as leader,
    ):
        assert await _until(lambda: leader.is_leader, 10.0)
        follower = CountingRelay(pg_url, publisher, poll_s=NEVER_POLL_S)
        async with follower:
            assert await _until(lambda: follower.tries > 0, 10.0)
            assert follower.tries == 1 and not follower.is_leader
            ids = await _commit_rows(pg_url, publisher, 30)
            # The follower's waiter learns the positions from the leader's NOTIFYs; its relay stayed asleep.
            positions = await asyncio.wait_for(follower.wait_published(pool, ids, NEVER_POLL_S), 20.0)
            assert len(positions) == 30
            await asyncio.sleep(0.3)  # any wake the NOTIFYs caused has run by now
            assert follower.tries == 1, "the follower asked for the lock at new rows' NOTIFYs"


async def test_a_follower_takes_over_within_its_poll_interval_when_the_leader_stops(
    kafka_bootstrap: str, kafka_topics: str, pg_url: str
) -> None:
    async with _commands(kafka_bootstrap, kafka_topics, pg_url) as (publisher, pool):
        leader = OutboxRelay(pg_url, publisher, poll_s=NEVER_POLL_S)
        await leader.start()
        try:
            assert await _until(lambda: leader.is_leader, 10.0)
            follower = CountingRelay(pg_url, publisher, poll_s=0.2)
            async with follower:
                assert await _until(lambda: follower.tries > 0, 10.0) and not follower.is_leader
                await leader.stop()  # its session ends, and the lock with it
                # Within a few poll intervals (no NOTIFY needed: nothing is committed meanwhile).
                assert await _until(lambda: follower.is_leader, 3.0), "the follower did not take over"
                ids = await _commit_rows(pg_url, publisher, 3)
                positions = await asyncio.wait_for(follower.wait_published(pool, ids, 10.0), 20.0)
                assert len(positions) == 3
        finally:
            await leader.stop()
