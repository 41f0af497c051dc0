"""What the command API remembers in PostgreSQL so that a retried command never makes a twin.

Enqueueing rollouts goes through two short transactions, and no Kafka I/O happens inside either:

1. ``ids_for_key``: an Idempotency-Key is bound to the rollout ids of its first request (a retry reuses them).
2. ``reserve_rollouts``: each new rollout's event is stored, the rollout enters the lifecycle queue and its
   event the outbox, all at once. A rollout id that already exists with a different request is a conflict and
   nothing is stored. The outbox relay publishes the event (the stored one, with its original event id); the
   command answers once the relay has, with the positions (``stored_rollouts`` + the relay's waiters).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from producers import outbox
from producers.errors import IdempotencyConflict
from producers.lifecycle import insert_rollouts
from producers.pipelined import pipelined_transaction
from projections.migrations import load_package_migrations, migrate
from schemas import Event, Position, RolloutEnqueued, decode, encode

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from psycopg import AsyncConnection, AsyncCursor
    from pydantic import BaseModel

    from producers.publisher import EventPublisher

NAMESPACE = "commands"


async def migrate_commands(conn: AsyncConnection[Any]) -> list[int]:
    """Create the command API's tables (``producers/sql``) under the ``commands`` namespace."""
    return await migrate(conn, NAMESPACE, load_package_migrations("producers"))


def request_hash(*requests: BaseModel) -> str:
    """A digest of what was asked, independent of key order, to tell a retry from a different request."""
    digest = hashlib.sha256()
    for request in requests:
        digest.update(orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS))
        digest.update(b"\x1e")
    return digest.hexdigest()


# One statement, its own transaction: the binding made now, or the one found. A binding committed by a concurrent
# request after this statement's snapshot is invisible to it (no row): ``ids_for_key`` reads it again then.
_BIND_KEY = (
    "WITH made AS (INSERT INTO command_idempotency_keys (idempotency_key, request_hash, rollout_ids)"
    " VALUES (%(key)s, %(digest)s, %(ids)s) ON CONFLICT (idempotency_key) DO NOTHING"
    " RETURNING request_hash, rollout_ids)"
    " SELECT request_hash, rollout_ids FROM made UNION ALL"
    " SELECT request_hash, rollout_ids FROM command_idempotency_keys WHERE idempotency_key = %(key)s"
)


async def send_key_binding(conn: AsyncConnection[Any], key: str, digest: str, proposed: list[str]) -> AsyncCursor[Any]:
    """Bind Idempotency-Key ``key`` to ``proposed`` unless it is bound; ``ids_for_key(..., sent=)`` reads the answer.

    In a pipeline this only sends the statement, so another can travel with it.
    """
    return await conn.execute(_BIND_KEY, {"key": key, "digest": digest, "ids": proposed})


async def ids_for_key(
    conn: AsyncConnection[Any], key: str, digest: str, proposed: list[str], *, sent: AsyncCursor[Any] | None = None
) -> list[str]:
    """The rollout ids bound to Idempotency-Key ``key``: ``proposed`` on first use, the stored ones after.

    ``sent``: the cursor of ``send_key_binding`` when the statement went out already.

    Raises:
        IdempotencyConflict: the key was used before for a different request.
    """
    cur = sent if sent is not None else await send_key_binding(conn, key, digest, proposed)
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute(
            "SELECT request_hash, rollout_ids FROM command_idempotency_keys WHERE idempotency_key = %s", (key,)
        )
        row = await cur.fetchone()
    assert row is not None
    if row[0] != digest:
        raise IdempotencyConflict(f"Idempotency-Key {key!r} was already used for a different request")
    ids: list[str] = row[1]
    return ids


async def reserve_rollouts(
    conn: AsyncConnection[Any],
    publisher: EventPublisher,
    planned: Sequence[tuple[RolloutEnqueued, str]],
    companions: Mapping[str, Event] | None = None,
) -> dict[str, int]:
    """Store each planned (event, request digest) unless its rollout id exists already; returns the new ids, each
    with the outbox row of its event.

    In the same transaction, each new rollout enters the lifecycle write model's queue and its event the outbox,
    so the rollout is enqueued exactly once and its event published by the relay, never by this request.
    ``companions`` (by rollout id, such as the router's decision) of new rollouts only enter the outbox, before
    the rollouts' events: a retried request records none again, and a read after the rollout's position sees them.

    Raises:
        IdempotencyConflict: a rollout id exists for a different request; nothing is stored.
    """
    rows = [(e.rollout_id, digest, encode(e)[0].decode()) for e, digest in planned]
    wanted = {rollout_id: digest for rollout_id, digest, _ in rows}
    async with pipelined_transaction(conn):
        cur = await conn.execute(
            "INSERT INTO command_rollouts (rollout_id, request_hash, event)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) ON CONFLICT (rollout_id) DO NOTHING"
            " RETURNING rollout_id",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
        )
        fresh = {row[0] for row in await cur.fetchall()}
        # Only a rollout id that was there before can clash: the usual request (all new) skips the round trip.
        known = [rollout_id for rollout_id in wanted if rollout_id not in fresh]
        clashes: list[str] = []
        if known:
            cur = await conn.execute(
                "SELECT rollout_id, request_hash FROM command_rollouts WHERE rollout_id = ANY(%b)", (known,)
            )
            clashes = sorted(rollout_id for rollout_id, digest in await cur.fetchall() if wanted[rollout_id] != digest)
        if clashes:
            raise IdempotencyConflict(
                f"rollout {clashes[0]!r} already exists with a different request"
                + (f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else "")
            )
        new = [e for e, _ in planned if e.rollout_id in fresh]
        extra = companions or {}
        await outbox.append(conn, publisher, [extra[e.rollout_id] for e in new if e.rollout_id in extra])
        outbox_ids = await _enter_outbox(conn, publisher, new)
    return {e.rollout_id: outbox_id for e, outbox_id in zip(new, outbox_ids, strict=True)}


async def _enter_outbox(
    conn: AsyncConnection[Any], publisher: EventPublisher, events: Sequence[RolloutEnqueued]
) -> list[int]:
    if not events:
        return []
    await insert_rollouts(conn, events)
    outbox_ids = await outbox.append(conn, publisher, events)
    await conn.execute(
        "UPDATE command_rollouts SET outbox_id = o.id FROM unnest(%b::text[], %b::bigint[]) AS o(rollout_id, id)"
        " WHERE command_rollouts.rollout_id = o.rollout_id",
        ([e.rollout_id for e in events], outbox_ids),
    )
    return outbox_ids


@dataclass(frozen=True)
class StoredRollout:
    rollout_id: str
    event: RolloutEnqueued
    #: where the event landed when it is known here (rows confirmed before the outbox existed)
    position: Position | None
    outbox_id: int | None


async def stored_rollouts(
    conn: AsyncConnection[Any], publisher: EventPublisher, rollout_ids: Sequence[str]
) -> dict[str, StoredRollout]:
    """The stored rollouts; one reserved before the outbox existed and never published enters it now.

    A rollout whose outbox row is published answers that row's position at once. Read in the same statement as
    the rollout, it cannot be missed: the prune copies the position and deletes the row in one statement
    (producers.outbox_retention), so a snapshot holds one or the other. Read later, by waiting for the row, a
    prune in between left the waiter nothing to find.
    """
    async with conn.transaction():
        cur = await conn.execute(
            'SELECT c.rollout_id, c.event, COALESCE(c.topic, o.topic), COALESCE(c."partition", o."partition"),'
            ' COALESCE(c."offset", o."offset"), c.outbox_id FROM command_rollouts c'
            " LEFT JOIN outbox o ON c.topic IS NULL AND o.id = c.outbox_id AND o.published"
            " WHERE c.rollout_id = ANY(%b) ORDER BY c.rollout_id FOR UPDATE OF c",
            (list(rollout_ids),),
        )
        found: dict[str, StoredRollout] = {}
        orphans: list[RolloutEnqueued] = []
        for rollout_id, event, topic, partition, offset, outbox_id in await cur.fetchall():
            decoded = decode(event.encode())
            assert isinstance(decoded, RolloutEnqueued)
            position = None if topic is None else Position(topic=topic, partition=partition, offset=offset)
            found[rollout_id] = StoredRollout(rollout_id, decoded, position, outbox_id)
            if position is None and outbox_id is None:
                orphans.append(decoded)
        if orphans:
            await _enter_outbox(conn, publisher, orphans)
            return await stored_rollouts(conn, publisher, rollout_ids)
    return found


async def next_number(conn: AsyncConnection[Any], kind: str, key: str, count: int = 1) -> int:
    """Reserve ``count`` numbers of the counter (kind, key); returns the last one (the first is last-count+1).

    Inside a transaction, the counter's row stays locked until it ends: callers that publish before
    committing thereby publish their numbers in order, and a failed publish gives its number back.
    """
    cur = await conn.execute(
        "INSERT INTO command_counters (kind, id, last) VALUES (%s, %s, %s)"
        " ON CONFLICT (kind, id) DO UPDATE SET last = command_counters.last + EXCLUDED.last RETURNING last",
        (kind, key, count),
    )
    row = await cur.fetchone()
    assert row is not None
    last: int = row[0]
    return last
