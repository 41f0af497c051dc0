"""Outbox retention: old published rows go, unpublished and young ones stay, and retries still answer."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg import sql

from core.config import Settings
from producers import outbox
from producers.idempotency import migrate_commands, reserve_rollouts, stored_rollouts
from producers.outbox import OutboxRelay
from producers.outbox_retention import prune_outbox
from producers.publisher import EventPublisher
from schemas import Position
from tests.fixtures.events import make_rollout_enqueued

pytestmark = pytest.mark.pg

DAY_S = 24 * 3600.0


async def _migrated(pg_url: str) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    await migrate_commands(conn)
    return conn


async def _append(conn: psycopg.AsyncConnection[Any], publisher: EventPublisher, n: int) -> list[int]:
    async with conn.transaction():
        return await outbox.append(conn, publisher, [make_rollout_enqueued() for _ in range(n)])


async def _publish(conn: psycopg.AsyncConnection[Any], ids: list[int]) -> None:
    """Mark rows published at made-up positions (offset = id), as the relay does once the broker has them."""
    await conn.execute('UPDATE outbox SET published = true, "partition" = 0, "offset" = id WHERE id = ANY(%s)', (ids,))


async def _age(conn: psycopg.AsyncConnection[Any], table: str, where: str, ids: list[Any], days: float) -> None:
    query = sql.SQL("UPDATE {} SET created_at = now() - make_interval(days => %s) WHERE {} = ANY(%s)")
    await conn.execute(query.format(sql.Identifier(table), sql.Identifier(where)), (days, ids))


async def _relayed(conn: psycopg.AsyncConnection[Any], relay: OutboxRelay, count: int) -> None:
    """Wake the relay and wait until ``count`` rows are published."""
    relay.kick()
    for _ in range(300):
        cur = await conn.execute("SELECT count(*) FROM outbox WHERE published")
        if (row := await cur.fetchone()) and row[0] == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the relay did not publish")


async def _left(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    cur = await conn.execute("SELECT id FROM outbox ORDER BY id")
    return [row[0] for row in await cur.fetchall()]


async def test_published_rows_past_the_retention_go_and_the_others_stay(pg_url: str) -> None:
    publisher = EventPublisher("unused:9092")  # encodes records only
    async with await _migrated(pg_url) as conn:
        old_published = await _append(conn, publisher, 5)
        old_pending = await _append(conn, publisher, 1)  # the broker was down: it stays, and holds nothing up
        young_pending = await _append(conn, publisher, 1)
        later_old_published = await _append(conn, publisher, 2)
        young_published = await _append(conn, publisher, 1)
        await _publish(conn, old_published + later_old_published + young_published)
        await _age(conn, "outbox", "id", old_published + old_pending + later_old_published, days=2)

        # Batches of 2: the loop goes on until a round finds nothing.
        assert await prune_outbox(conn, DAY_S, batch=2) == 7
        assert await _left(conn) == old_pending + young_pending + young_published
        assert await prune_outbox(conn, DAY_S, batch=2) == 0


async def test_a_rollout_enqueued_before_the_retention_still_answers_its_position(pg_url: str) -> None:
    publisher = EventPublisher("unused:9092")
    event = make_rollout_enqueued()
    async with await _migrated(pg_url) as conn:
        ids = await reserve_rollouts(conn, publisher, [(event, "digest")])
        outbox_id = ids[event.rollout_id]
        await _publish(conn, [outbox_id])
        cur = await conn.execute("SELECT topic FROM outbox WHERE id = %s", (outbox_id,))
        topic = (await cur.fetchone() or [""])[0]
        await _age(conn, "outbox", "id", [outbox_id], days=8)

        assert await prune_outbox(conn, 7 * DAY_S) == 1
        assert await _left(conn) == []
        stored = (await stored_rollouts(conn, publisher, [event.rollout_id]))[event.rollout_id]
        assert stored.position == Position(topic=topic, partition=0, offset=outbox_id)
        assert stored.event.event_id == event.event_id


async def test_a_published_rollout_answers_its_position_before_the_prune_as_after(pg_url: str) -> None:
    """A re-enqueue reads its rollout, then the prune deletes the row: the position was read with the rollout.

    Read by waiting for the outbox row instead, it was gone, and the re-enqueue was answered 503 after
    ``AGL_API_PUBLISH_WAIT_S``.
    """
    publisher = EventPublisher("unused:9092")
    event, pending = make_rollout_enqueued(), make_rollout_enqueued()
    async with await _migrated(pg_url) as conn:
        ids = await reserve_rollouts(conn, publisher, [(event, "digest"), (pending, "digest")])
        outbox_id = ids[event.rollout_id]
        await _publish(conn, [outbox_id])
        cur = await conn.execute("SELECT topic FROM outbox WHERE id = %s", (outbox_id,))
        position = Position(topic=(await cur.fetchone() or [""])[0], partition=0, offset=outbox_id)
        await _age(conn, "outbox", "id", [outbox_id], days=8)

        before = await stored_rollouts(conn, publisher, [event.rollout_id, pending.rollout_id])
        assert before[event.rollout_id].position == position
        assert before[pending.rollout_id].position is None, "not published: the relay's waiters answer it"
        assert before[pending.rollout_id].outbox_id == ids[pending.rollout_id]
        assert await prune_outbox(conn, 7 * DAY_S) == 1
        after = await stored_rollouts(conn, publisher, [event.rollout_id])
        assert after[event.rollout_id].position == position


async def test_idempotency_keys_expire_with_the_retention(pg_url: str) -> None:
    async with await _migrated(pg_url) as conn:
        for key in ("old", "young"):
            await conn.execute(
                "INSERT INTO command_requests (route, idempotency_key, request_hash, outbox_ids)"
                " VALUES ('rewards', %s, 'h', '{}')",
                (key,),
            )
            await conn.execute(
                "INSERT INTO command_idempotency_keys (idempotency_key, request_hash, rollout_ids)"
                " VALUES (%s, 'h', '{}')",
                (key,),
            )
        await _age(conn, "command_requests", "idempotency_key", ["old"], days=2)
        await _age(conn, "command_idempotency_keys", "idempotency_key", ["old"], days=2)

        await prune_outbox(conn, DAY_S)
        for table in ("command_requests", "command_idempotency_keys"):
            cur = await conn.execute(sql.SQL("SELECT idempotency_key FROM {}").format(sql.Identifier(table)))
            assert [row[0] for row in await cur.fetchall()] == ["young"], table


@pytest.mark.kafka
async def test_the_leading_relay_prunes_what_it_published_once_it_is_old(
    kafka_bootstrap: str, kafka_topics: str, pg_url: str
) -> None:
    async with (
        await _migrated(pg_url) as conn,
        EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics) as publisher,
        OutboxRelay(pg_url, publisher, retention_s=DAY_S, prune_every_s=0.1) as relay,
    ):
        ids = await _append(conn, publisher, 3)
        await _relayed(conn, relay, 3)
        await asyncio.sleep(0.5)
        assert await _left(conn) == ids, "young rows stay"
        await _age(conn, "outbox", "id", ids[:2], days=2)
        for _ in range(100):
            if await _left(conn) == ids[2:]:
                break
            await asyncio.sleep(0.05)
        assert await _left(conn) == ids[2:]


@pytest.mark.kafka
async def test_a_relay_without_a_retention_prunes_nothing(kafka_bootstrap: str, kafka_topics: str, pg_url: str) -> None:
    async with (
        await _migrated(pg_url) as conn,
        EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics) as publisher,
        OutboxRelay(pg_url, publisher, prune_every_s=0.05) as relay,  # a short-lived command's relay
    ):
        ids = await _append(conn, publisher, 2)
        await _age(conn, "outbox", "id", ids, days=30)
        await _relayed(conn, relay, 2)
        assert relay.is_leader
        await asyncio.sleep(0.5)
        assert await _left(conn) == ids


async def test_a_retry_reading_its_key_keeps_the_rows_it_answers_with(pg_url: str) -> None:
    publisher = EventPublisher("unused:9092")
    async with await _migrated(pg_url) as conn, await psycopg.AsyncConnection.connect(pg_url) as retry:
        ids = await _append(conn, publisher, 2)
        await _publish(conn, ids)
        await conn.execute(
            "INSERT INTO command_requests (route, idempotency_key, request_hash, outbox_ids)"
            " VALUES ('r', 'k', 'h', %s)",
            (ids,),
        )
        await _age(conn, "outbox", "id", ids, days=2)
        await _age(conn, "command_requests", "idempotency_key", ["k"], days=2)
        # The retry's transaction (producers.requests): the key, held FOR SHARE, then its rows.
        await retry.execute("SELECT outbox_ids FROM command_requests WHERE idempotency_key = 'k' FOR SHARE")
        pruning = asyncio.create_task(prune_outbox(conn, DAY_S))
        await asyncio.sleep(0.5)
        assert not pruning.done(), "the prune waits for the retry's key"
        cur = await retry.execute("SELECT id FROM outbox WHERE id = ANY(%s) ORDER BY id", (ids,))
        assert [row[0] for row in await cur.fetchall()] == ids
        await retry.commit()
        assert await asyncio.wait_for(pruning, 10) == 2
        assert await _left(conn) == []


@pytest.mark.parametrize("value", ["59", "1e300", "nan"])
def test_a_retention_postgresql_or_the_relay_could_not_use_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValueError, match="outbox_retention_s"):
        Settings(outbox_retention_s=value)
