"""The write side's register of the latest resources: set when resources are published, read when rollouts are
enqueued without naming theirs (``producers/sql/003_latest_resources.sql``).

Both run inside the command's own transaction. Publishing updates the one row before its event enters the outbox,
so two concurrent publishes are serialised on it: the one committed last is the latest, and its event is also
the later one in the outbox.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, AsyncCursor


async def record_latest(conn: AsyncConnection[Any], resources_id: str, version: int) -> None:
    """``resources_id`` at ``version`` is the latest (inside the publishing transaction)."""
    await conn.execute(
        "INSERT INTO command_latest_resources (one, resources_id, resources_version) VALUES (true, %s, %s)"
        " ON CONFLICT (one) DO UPDATE SET resources_id = EXCLUDED.resources_id,"
        " resources_version = EXCLUDED.resources_version, published_at = now()",
        (resources_id, version),
    )


async def latest_resources_id(conn: AsyncConnection[Any], *, sent: AsyncCursor[Any] | None = None) -> str | None:
    """The latest published resources' id; None before any was published (through this register).

    ``sent``: the cursor of ``send_latest_read`` when the statement went out already (in a pipeline).
    """
    cur = sent if sent is not None else await send_latest_read(conn)
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def send_latest_read(conn: AsyncConnection[Any]) -> AsyncCursor[Any]:
    """The read of the latest resources' id; in a pipeline this only sends it."""
    return await conn.execute("SELECT resources_id FROM command_latest_resources WHERE one")
