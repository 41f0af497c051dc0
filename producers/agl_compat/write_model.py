"""Answers to v0.3 writes, read from the lifecycle write model right after the decision: their client expects the
rollout or attempt as the write left it, which the read models (fed through Kafka) show a moment later.

Read-only: every change still goes through :mod:`producers.lifecycle` and the outbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from producers.agl_compat.convert import attempt_status, config_out, epoch
from producers.agl_compat.models import Attempt, AttemptedRollout, Rollout

if TYPE_CHECKING:
    from psycopg import AsyncConnection

_ATTEMPT_COLS = "attempt_id, rollout_id, sequence_id, worker_id, status, claimed_at, ended_at, last_seen"


def _attempt(row: tuple[Any, ...]) -> Attempt:
    attempt_id, rollout_id, sequence_id, worker_id, status, claimed_at, ended_at, last_seen = row
    return Attempt(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        sequence_id=sequence_id,
        start_time=epoch(claimed_at) or 0.0,
        end_time=epoch(ended_at),
        status=attempt_status(status),
        worker_id=worker_id,
        last_heartbeat_time=epoch(last_seen) if last_seen != claimed_at else None,
        metadata=None,
    )


async def attempt(conn: AsyncConnection[Any], rollout_id: str, attempt_id: str) -> Attempt | None:
    """An attempt of a rollout; ``latest`` names the rollout's newest attempt."""
    if attempt_id == "latest":
        query = (
            f"SELECT {_ATTEMPT_COLS} FROM lifecycle_attempts WHERE rollout_id = %s"  # noqa: S608 - constant columns
            " ORDER BY sequence_id DESC LIMIT 1"
        )
        params: tuple[str, ...] = (rollout_id,)
    else:
        query = f"SELECT {_ATTEMPT_COLS} FROM lifecycle_attempts WHERE rollout_id = %s AND attempt_id = %s"  # noqa: S608
        params = (rollout_id, attempt_id)
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return None if row is None else _attempt(row)


async def rollout(conn: AsyncConnection[Any], rollout_id: str) -> Rollout | AttemptedRollout | None:
    """The rollout as the write model holds it, with its newest attempt when it has one."""
    cur = await conn.execute(
        "SELECT rollout_id, input, enqueued_at, ended_at, mode, resources_id, status, config, metadata,"
        " latest_attempt_id FROM lifecycle_rollouts WHERE rollout_id = %s",
        (rollout_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    rid, input_, enqueued_at, ended_at, mode, resources_id, status, config, metadata, latest = row
    fields: dict[str, Any] = {
        "rollout_id": rid,
        "input": input_,
        "start_time": epoch(enqueued_at) or 0.0,
        "end_time": epoch(ended_at),
        "mode": mode,
        "resources_id": resources_id,
        "status": status,
        "config": config_out(config),
        "metadata": metadata or {},
    }
    if latest is None:
        return Rollout(**fields)
    found = await attempt(conn, rollout_id, latest)
    return Rollout(**fields) if found is None else AttemptedRollout(**fields, attempt=found)


async def active_attempts(conn: AsyncConnection[Any], worker_id: str) -> list[tuple[str, str]]:
    """``(rollout_id, attempt_id)`` of the worker's attempts still at work."""
    cur = await conn.execute(
        "SELECT rollout_id, attempt_id FROM lifecycle_attempts WHERE worker_id = %s AND ended_at IS NULL",
        (worker_id,),
    )
    return [(r, a) for r, a in await cur.fetchall()]


async def decision_number(conn: AsyncConnection[Any], rollout_id: str) -> int | None:
    """The number of the rollout's newest decision (0: enqueued, none yet), or ``None`` for an unknown rollout."""
    cur = await conn.execute("SELECT seq FROM lifecycle_rollouts WHERE rollout_id = %s", (rollout_id,))
    row = await cur.fetchone()
    return None if row is None else int(row[0])
