"""What the command API remembers in PostgreSQL so that a retried command never makes a twin.

Enqueueing rollouts goes through three short transactions:

1. ``ids_for_key``: an Idempotency-Key is bound to the rollout ids of its first request (a retry reuses them).
2. ``reserve_rollouts``: each rollout's event is stored *before* it is published. A rollout id that already
   exists with a different request is a conflict and nothing is stored.
3. ``lock_rollouts`` + ``confirm_rollouts``: under row locks (so concurrent twins wait for each other), events
   not yet confirmed are published -- the stored ones, with their original event ids -- and their positions
   written. A crash between publish and confirm republishes the same event, which consumers deduplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from producers.errors import IdempotencyConflict
from projections.migrations import load_package_migrations, migrate
from schemas import Position, RolloutEnqueued, decode, encode

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection
    from pydantic import BaseModel

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


async def ids_for_key(conn: AsyncConnection[Any], key: str, digest: str, proposed: list[str]) -> list[str]:
    """The rollout ids bound to Idempotency-Key ``key``: ``proposed`` on first use, the stored ones after.

    Raises:
        IdempotencyConflict: the key was used before for a different request.
    """
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO command_idempotency_keys (idempotency_key, request_hash, rollout_ids) VALUES (%s, %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            (key, digest, proposed),
        )
        cur = await conn.execute(
            "SELECT request_hash, rollout_ids FROM command_idempotency_keys WHERE idempotency_key = %s", (key,)
        )
        row = await cur.fetchone()
    assert row is not None
    if row[0] != digest:
        raise IdempotencyConflict(f"Idempotency-Key {key!r} was already used for a different request")
    ids: list[str] = row[1]
    return ids


@dataclass(frozen=True)
class StoredRollout:
    rollout_id: str
    event: RolloutEnqueued
    position: Position | None


async def reserve_rollouts(conn: AsyncConnection[Any], planned: Sequence[tuple[RolloutEnqueued, str]]) -> None:
    """Store each planned (event, request digest) unless its rollout id exists already.

    Raises:
        IdempotencyConflict: a rollout id exists for a different request; nothing is stored.
    """
    rows = [(e.rollout_id, digest, encode(e)[0].decode()) for e, digest in planned]
    wanted = {rollout_id: digest for rollout_id, digest, _ in rows}
    async with conn.transaction():
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO command_rollouts (rollout_id, request_hash, event) VALUES (%s, %s, %s)"
                " ON CONFLICT (rollout_id) DO NOTHING",
                rows,
            )
        cur = await conn.execute(
            "SELECT rollout_id, request_hash FROM command_rollouts WHERE rollout_id = ANY(%s)", (list(wanted),)
        )
        clashes = sorted(rollout_id for rollout_id, digest in await cur.fetchall() if wanted[rollout_id] != digest)
        if clashes:
            raise IdempotencyConflict(
                f"rollout {clashes[0]!r} already exists with a different request"
                + (f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else "")
            )


async def lock_rollouts(conn: AsyncConnection[Any], rollout_ids: Sequence[str]) -> dict[str, StoredRollout]:
    """The stored rollouts, locked until the transaction ends (call inside ``conn.transaction()``)."""
    cur = await conn.execute(
        'SELECT rollout_id, event, topic, "partition", "offset" FROM command_rollouts'
        " WHERE rollout_id = ANY(%s) ORDER BY rollout_id FOR UPDATE",
        (list(rollout_ids),),
    )
    found: dict[str, StoredRollout] = {}
    for rollout_id, event, topic, partition, offset in await cur.fetchall():
        decoded = decode(event.encode())
        assert isinstance(decoded, RolloutEnqueued)
        position = None if topic is None else Position(topic=topic, partition=partition, offset=offset)
        found[rollout_id] = StoredRollout(rollout_id, decoded, position)
    return found


async def confirm_rollouts(conn: AsyncConnection[Any], confirmed: Sequence[tuple[str, Position]]) -> None:
    """Record where the broker put each rollout's event."""
    async with conn.cursor() as cur:
        await cur.executemany(
            'UPDATE command_rollouts SET topic = %s, "partition" = %s, "offset" = %s WHERE rollout_id = %s',
            [(p.topic, p.partition, p.offset, rollout_id) for rollout_id, p in confirmed],
        )


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
