"""v0.3 reads, served from our read models (rollouts, resources, workers, spans) through their query functions.

These read models are fed from the log: a write shows in them a moment after it is answered, as in any
read model here (the write routes answer from the write model, so a client sees its own write at once).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from producers.agl_compat import write_model
from producers.agl_compat.convert import attempt_out, resources_out, rollout_out, worker_out
from producers.agl_compat.models import AttemptedRollout, ResourcesUpdate, Rollout, Worker
from projections import resources as resources_model
from projections import rollouts as rollouts_model
from projections import workers as workers_model
from projections.errors import ProjectionNotReady
from projections.reading import reading
from schemas import TERMINAL_STATUSES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg_pool import AsyncConnectionPool

    from producers.agl_compat.models import Attempt

#: A search that filters or sorts beyond what the read model's query does reads at most this many rollouts.
MAX_SCAN = 100_000
#: How long a read of one rollout waits for the read model to apply the rollout's newest decision.
DECIDED_WAIT_S = 5.0
#: Seconds without a heartbeat after which a worker reads ``unknown``.
WORKER_STALE_S = 60.0


async def latest_resources_id(pool: AsyncConnectionPool[Any]) -> str | None:
    """The latest resources' id, or ``None`` when none was published (or the resources model is not running)."""
    try:
        async with pool.connection() as conn, reading(conn, resources_model.PROJECTION):
            found = await resources_model.latest_resources(conn)
    except ProjectionNotReady:
        return None
    return None if found is None else found.resources_id


async def rollouts(
    pool: AsyncConnectionPool[Any],
    *,
    status: Sequence[str] = (),
    rollout_ids: Sequence[str] = (),
    limit: int = MAX_SCAN,
    offset: int = 0,
) -> tuple[list[Rollout | AttemptedRollout], int]:
    """Rollouts (with their newest attempt inline) matching every filter given, oldest first, and their count."""
    async with pool.connection() as conn, reading(conn, rollouts_model.PROJECTION):
        rows, total = await rollouts_model.list_rollouts(
            conn, status=status, rollout_ids=rollout_ids, limit=limit, offset=offset
        )
        latest = await rollouts_model.get_attempts(conn, [r.latest_attempt_id for r in rows if r.latest_attempt_id])
    return [rollout_out(r, latest.get(r.latest_attempt_id or "")) for r in rows], total


async def terminal_rollouts(pool: AsyncConnectionPool[Any], rollout_ids: list[str]) -> list[Rollout]:
    """Those of ``rollout_ids`` that have ended (as plain rollouts, as their wait answers)."""
    if not rollout_ids:
        return []
    found, _ = await rollouts(pool, rollout_ids=rollout_ids, limit=len(rollout_ids))
    return [Rollout(**r.model_dump(exclude={"attempt"})) for r in found if r.status in TERMINAL_STATUSES]


async def rollout(
    pool: AsyncConnectionPool[Any], rollout_id: str
) -> tuple[Rollout | AttemptedRollout, list[Attempt], int] | None:
    """One rollout (with its newest attempt), all its attempts in sequence order and the number of the newest
    decision the read model has applied; or ``None``."""
    async with pool.connection() as conn, reading(conn, rollouts_model.PROJECTION):
        found = await rollouts_model.get_rollout(conn, rollout_id)
    if found is None:
        return None
    row, attempts = found
    latest = next((a for a in attempts if a.attempt_id == row.latest_attempt_id), None)
    converted = [attempt_out(a, fallback_start=row.start_time) for a in attempts]
    return rollout_out(row, latest), converted, row.decision_seq


async def rollout_as_decided(
    pool: AsyncConnectionPool[Any], rollout_id: str
) -> tuple[Rollout | AttemptedRollout, list[Attempt]] | None:
    """:func:`rollout` once the read model has applied the rollout's newest decision (up to ``DECIDED_WAIT_S``):
    a client reading right after its own update sees it, as it would in one in-memory store."""
    async with pool.connection() as conn:
        wanted = await write_model.decision_number(conn, rollout_id)
    if wanted is None:
        return None
    deadline = asyncio.get_running_loop().time() + DECIDED_WAIT_S
    while True:
        found = await rollout(pool, rollout_id)
        if (found is not None and found[2] >= wanted) or asyncio.get_running_loop().time() >= deadline:
            return None if found is None else (found[0], found[1])
        await asyncio.sleep(0.02)


async def resources(pool: AsyncConnectionPool[Any], resources_id: str | None) -> ResourcesUpdate | None:
    """The newest version of ``resources_id`` (of any id when ``None``), or ``None``."""
    async with pool.connection() as conn, reading(conn, resources_model.PROJECTION):
        if resources_id is None:
            found = await resources_model.latest_resources(conn)
        else:
            found = await resources_model.get_resources(conn, resources_id)
    return None if found is None else resources_out(found)


async def all_resources(pool: AsyncConnectionPool[Any]) -> list[ResourcesUpdate]:
    """The newest version of every resources id."""
    async with pool.connection() as conn, reading(conn, resources_model.PROJECTION):
        summaries, _ = await resources_model.list_resources(conn, limit=MAX_SCAN)
        found = [await resources_model.get_resources(conn, s.resources_id) for s in summaries]
    return [resources_out(f) for f in found if f is not None]


async def workers(pool: AsyncConnectionPool[Any], worker_id: str | None = None) -> list[Worker]:
    """Every worker, or the one named (an empty list when it is unknown)."""
    async with pool.connection() as conn, reading(conn, workers_model.PROJECTION):
        if worker_id is not None:
            one = await workers_model.get_worker(conn, worker_id, stale_s=WORKER_STALE_S)
            views = [] if one is None else [one]
        else:
            views, _ = await workers_model.list_workers(conn, stale_s=WORKER_STALE_S, limit=MAX_SCAN)
    return [worker_out(v) for v in views]


async def count(pool: AsyncConnectionPool[Any], projection: Any, query: str) -> int:
    """One number from a read model (0 when it is not running)."""
    try:
        async with pool.connection() as conn, reading(conn, projection):
            cur = await conn.execute(query)
            row = await cur.fetchone()
    except ProjectionNotReady:
        return 0
    return int(row[0] or 0) if row else 0
