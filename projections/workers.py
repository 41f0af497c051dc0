"""The workers read model: each runner's registration, its last heartbeat and whether it deregistered.

A worker writes its own events, all on one partition (keyed by ``worker_id``). Three groups of facts are kept,
each latest-wins by ``(occurred_at, event_id)``: the registration (capabilities, slots), the last heartbeat (its
stats: busy slots and the attempts it runs) and the deregistration. Latest-wins makes every event idempotent and
the rows independent of the order they were applied in, so the engine keeps no ``event_id`` for them (a worker
heartbeats every few seconds for as long as it lives; tracking each would grow a table without bound).

The status depends on the time of reading, so it is derived by the read query, never stored:

- ``stopped``: deregistered after its latest registration (a late heartbeat does not revive it; a new
  registration does);
- ``unknown``: not seen (last heartbeat, else registration) within the staleness window;
- ``busy``: the last heartbeat since its latest registration reports ``busy_slots > 0``;
- ``idle`` otherwise.

Heartbeat stats: ``{"busy_slots": int, "slots": int, "attempts": [attempt ids]}``; a heartbeat without
``busy_slots`` counts its attempts instead, and values of the wrong type are ignored rather than parked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import orjson
from psycopg.rows import class_row
from psycopg.types.json import Json, set_json_loads

from projections.base import BACKGROUND_LINGER_MS, Envelope, Projection
from projections.migrations import load_package_migrations
from schemas import WorkerDeregistered, WorkerHeartbeat, WorkerRegistered
from schemas.topics import WORKERS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

WorkerEvent = WorkerRegistered | WorkerHeartbeat | WorkerDeregistered
STATUSES = ("idle", "busy", "unknown", "stopped")
#: An int4 column holds no more; a runner reporting more busy slots than this is clamped, not parked.
_INT4_MAX = 2**31 - 1


@dataclass
class WorkerRow:
    worker_id: str
    capabilities: list[str] = field(default_factory=list)
    slots: int | None = None
    registered_at: datetime | None = None
    registered_event: UUID | None = None
    deregistered_at: datetime | None = None
    deregistered_event: UUID | None = None
    deregister_reason: str | None = None
    last_heartbeat_at: datetime | None = None
    heartbeat_event: UUID | None = None
    busy_slots: int = 0
    attempts: list[str] = field(default_factory=list)
    stats: Any = None


@dataclass
class WorkerView:
    """A worker as read: the stored facts and the status derived at the time of reading."""

    worker_id: str
    status: str
    capabilities: list[str]
    slots: int | None
    busy_slots: int
    attempts: list[str]
    last_heartbeat_at: datetime | None
    registered_at: datetime | None
    deregistered_at: datetime | None
    deregister_reason: str | None
    stats: Any


# -- the fold (pure) ----------------------------------------------------------------------------------------
def _newer(at: datetime | None, event_id: UUID | None, event: WorkerEvent) -> bool:
    """Whether ``event`` is later than the fact recorded at ``(at, event_id)``; UUIDv7 ids break clock ties."""
    return at is None or event_id is None or (event.occurred_at, event.event_id) > (at, event_id)


def _busy_slots(stats: dict[str, Any], attempts: list[str]) -> int:
    busy = stats.get("busy_slots")
    if isinstance(busy, int) and not isinstance(busy, bool):
        return max(0, min(busy, _INT4_MAX))
    return len(attempts)


def _attempts(stats: dict[str, Any]) -> list[str]:
    found = stats.get("attempts")
    return [a for a in found if isinstance(a, str)] if isinstance(found, list) else []


def fold(row: WorkerRow, event: WorkerEvent) -> None:
    """Record ``event`` in ``row`` when it is newer than the fact of its kind already there."""
    if isinstance(event, WorkerHeartbeat):
        if _newer(row.last_heartbeat_at, row.heartbeat_event, event):
            row.last_heartbeat_at, row.heartbeat_event = event.occurred_at, event.event_id
            row.attempts = _attempts(event.stats)
            row.busy_slots = _busy_slots(event.stats, row.attempts)
            row.stats = event.stats
    elif isinstance(event, WorkerRegistered):
        if _newer(row.registered_at, row.registered_event, event):
            row.registered_at, row.registered_event = event.occurred_at, event.event_id
            row.capabilities, row.slots = list(event.capabilities), event.concurrency
    elif _newer(row.deregistered_at, row.deregistered_event, event):
        row.deregistered_at, row.deregistered_event = event.occurred_at, event.event_id
        row.deregister_reason = event.reason


# -- apply: load, fold, save ----------------------------------------------------------------------------------
_COLS = [f.name for f in fields(WorkerRow)]


async def _load(conn: AsyncConnection[Any], worker_ids: list[str]) -> dict[str, WorkerRow]:
    async with conn.cursor(row_factory=class_row(WorkerRow)) as cur:
        set_json_loads(orjson.loads, cur)
        await cur.execute(
            f"SELECT {', '.join(_COLS)} FROM workers WHERE worker_id = ANY(%s)",  # noqa: S608 - constant columns
            (worker_ids,),
        )
        return {r.worker_id: r for r in await cur.fetchall()}


async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    """Load the touched workers, fold the batch into them, write them back in one statement."""
    events = cast("list[WorkerEvent]", [e.event for e in envelopes])
    if not events:
        return
    rows = await _load(conn, sorted({e.worker_id for e in events}))
    for event in events:
        row = rows.get(event.worker_id)
        if row is None:
            row = rows[event.worker_id] = WorkerRow(event.worker_id)
        fold(row, event)
    names = ", ".join(_COLS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLS[1:])
    # One JSON array typed by the table's own columns, as the rollouts projection writes (see its _upsert).
    await conn.execute(
        f"INSERT INTO workers ({names}) SELECT {names} "  # noqa: S608 - constant columns
        "FROM jsonb_populate_recordset(NULL::workers, %s::jsonb) "
        f"ON CONFLICT (worker_id) DO UPDATE SET {updates}",
        (Json([rows[i] for i in sorted(rows)], dumps=orjson.dumps),),
    )


# -- read queries (run with search_path at the active generation) --------------------------------------------------
_STOPPED = (
    "deregistered_at IS NOT NULL AND (registered_at IS NULL "
    "OR (deregistered_at, deregistered_event) > (registered_at, registered_event))"
)
#: A heartbeat from before the latest registration belongs to the worker's previous life: its work is not current.
_CURRENT = "last_heartbeat_at IS NOT NULL AND (registered_at IS NULL OR last_heartbeat_at >= registered_at)"
_VIEW = f"""
SELECT worker_id,
       CASE WHEN {_STOPPED} THEN 'stopped'
            WHEN greatest(last_heartbeat_at, registered_at) < now() - make_interval(secs => %(stale_s)s) THEN 'unknown'
            WHEN {_CURRENT} AND busy_slots > 0 THEN 'busy'
            ELSE 'idle' END AS status,
       capabilities, slots,
       CASE WHEN {_CURRENT} THEN busy_slots ELSE 0 END AS busy_slots,
       CASE WHEN {_CURRENT} THEN attempts ELSE '[]'::jsonb END AS attempts,
       last_heartbeat_at, registered_at, deregistered_at, deregister_reason, stats
FROM workers
"""  # noqa: S608 - constant fragments


async def list_workers(
    conn: AsyncConnection[Any], *, stale_s: float, status: Sequence[str] = (), limit: int = 50, offset: int = 0
) -> tuple[list[WorkerView], int]:
    """Workers by id with their status as of now (this transaction's start), filtered by status when given."""
    where = "cardinality(%(status)s::text[]) = 0 OR status = ANY(%(status)s)"
    params = {"stale_s": stale_s, "status": list(status), "limit": limit, "offset": offset}
    cur = await conn.execute(f"SELECT count(*) FROM ({_VIEW}) AS w WHERE {where}", params)  # noqa: S608
    total_row = await cur.fetchone()
    async with conn.cursor(row_factory=class_row(WorkerView)) as rows:
        set_json_loads(orjson.loads, rows)
        await rows.execute(
            f"SELECT * FROM ({_VIEW}) AS w WHERE {where} ORDER BY worker_id LIMIT %(limit)s OFFSET %(offset)s",  # noqa: S608
            params,
        )
        return await rows.fetchall(), int(total_row[0]) if total_row else 0


async def get_worker(conn: AsyncConnection[Any], worker_id: str, *, stale_s: float) -> WorkerView | None:
    async with conn.cursor(row_factory=class_row(WorkerView)) as cur:
        set_json_loads(orjson.loads, cur)
        query = f"SELECT * FROM ({_VIEW}) AS w WHERE worker_id = %(id)s"  # noqa: S608 - constant fragments
        await cur.execute(query, {"stale_s": stale_s, "id": worker_id})
        return await cur.fetchone()


PROJECTION = Projection(
    name="workers",
    version=1,
    topics=(WORKERS,),
    event_types=frozenset({WorkerRegistered, WorkerHeartbeat, WorkerDeregistered}),
    migrations=tuple(load_package_migrations("projections", "sql/workers")),
    apply=apply,
    tables=("workers",),
    idempotent_types=frozenset({WorkerRegistered, WorkerHeartbeat, WorkerDeregistered}),
    linger_ms=BACKGROUND_LINGER_MS,
    description="runners: capabilities, slots, current work, last heartbeat (GET /v1/workers)",
)
