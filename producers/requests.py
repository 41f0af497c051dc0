"""Commands that publish through the outbox once, whatever the retries: an ``Idempotency-Key`` binds a request
to its outbox rows, so a retry (after a lost answer, a 503, an API restart) answers with the same event ids and
positions and publishes nothing new. The same key with a different request is a conflict (409).

Every command's events are committed to the outbox in the transaction that decides them (numbers from counters
included, so a failed request gives its numbers back) and published by the relay afterwards: no Kafka I/O inside
a PostgreSQL transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from psycopg import errors
from psycopg.types.json import Jsonb

from producers import outbox
from producers.errors import IdempotencyConflict, NotPublishedYet
from producers.pipelined import pipelined_transaction

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    from producers.outbox import OutboxRelay
    from producers.publisher import EventPublisher
    from schemas import Event, Position


@dataclass(frozen=True)
class Committed:
    event_ids: list[str]
    positions: list[Position]
    answer: dict[str, Any]


async def commit_once(
    pool: AsyncConnectionPool[Any],
    publisher: EventPublisher,
    relay: OutboxRelay,
    *,
    route: str,
    key: str | None,
    digest: str,
    build: Callable[[AsyncConnection[Any]], Awaitable[tuple[Sequence[Event], dict[str, Any]]]],
) -> Committed:
    """Commit the request's events to the outbox (once per key), wait until they are published, answer.

    The connection goes back to the pool before the wait: a request waiting for Kafka holds none.
    """
    async with pool.connection() as conn:
        for _ in range(2):  # a concurrent twin with the same key may win the insert: then answer with its rows
            try:
                ids, answer, evids = await _commit(conn, publisher, route=route, key=key, digest=digest, build=build)
                break
            except errors.UniqueViolation:
                continue
        else:  # pragma: no cover - two conflicts in a row mean the row exists: the next read finds it
            ids, answer, evids = await _commit(conn, publisher, route=route, key=key, digest=digest, build=build)
    return Committed(evids, await wait_positions(relay, pool, ids), answer)


async def wait_positions(
    relay: OutboxRelay, pool: AsyncConnectionPool[Any], outbox_ids: Sequence[int]
) -> list[Position]:
    """Where the relay published these outbox rows; 503 (retriable) when it could not in time."""
    try:
        return await relay.wait_published(pool, outbox_ids, relay.publish_wait_s)
    except TimeoutError as e:
        raise NotPublishedYet(f"accepted, but not yet on the log: {e}; retry the same request") from e


async def _commit(
    conn: AsyncConnection[Any],
    publisher: EventPublisher,
    *,
    route: str,
    key: str | None,
    digest: str,
    build: Callable[[AsyncConnection[Any]], Awaitable[tuple[Sequence[Event], dict[str, Any]]]],
) -> tuple[list[int], dict[str, Any], list[str]]:
    """The request's outbox rows, its answer and its events' ids: committed now, or found from the first time."""
    async with pipelined_transaction(conn):
        if key is not None:
            cur = await conn.execute(
                # FOR SHARE: the outbox rows it names are read below; retention deletes the key before them
                # (producers.outbox_retention), and waits for this lock to do so.
                "SELECT request_hash, outbox_ids, answer FROM command_requests"
                " WHERE route = %s AND idempotency_key = %s FOR SHARE",
                (route, key),
            )
            row = await cur.fetchone()
            if row is not None:
                if row[0] != digest:
                    raise IdempotencyConflict(f"Idempotency-Key {key!r} was already used for a different request")
                return list(row[1]), dict(row[2]), await event_ids(conn, row[1])
        events, answer = await build(conn)
        ids = await outbox.append(conn, publisher, events)
        if key is not None:
            await conn.execute(
                "INSERT INTO command_requests (route, idempotency_key, request_hash, outbox_ids, answer)"
                " VALUES (%s, %s, %s, %s, %s)",
                (route, key, digest, ids, Jsonb(answer, dumps=orjson.dumps)),
            )
    return ids, answer, [str(e.event_id) for e in events]


async def event_ids(conn: AsyncConnection[Any], outbox_ids: Sequence[int]) -> list[str]:
    """The event ids carried by outbox rows, in the order given."""
    if not outbox_ids:
        return []
    cur = await conn.execute("SELECT id, value FROM outbox WHERE id = ANY(%b)", (list(outbox_ids),))
    found = {row[0]: str(orjson.loads(bytes(row[1]))["event_id"]) for row in await cur.fetchall()}
    return [found[i] for i in outbox_ids]
