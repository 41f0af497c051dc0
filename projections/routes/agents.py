"""``GET /v1/agents`` and ``GET /v1/agents/{agent_id}``: the workers read model seen as a registry of agents.

An agent is a worker; its type and version are the capabilities ``agent:<type>`` and ``version:<v>`` it
registered (``agl agents up`` adds them). Health comes from the time since it was last heard from (its last
heartbeat, else its registration), as of the database's clock at the read:

- ``healthy``: heard from within ``healthy_s`` (default 15 s: three of a runner's default 5 s heartbeats);
- ``degraded``: within ``unreachable_s`` (default 30 s: the workers read model's own staleness window);
- ``unreachable``: silent longer (the watchdog fails its attempts over once they time out);
- ``stopped``: deregistered after its latest registration.

``?capability=`` (repeatable) keeps the agents declaring all of them: the capability index the lifecycle's claims
use. ``free_slots`` is what the instance can still claim; ``attempts`` is its current work.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from pydantic import BaseModel

from producers.http import ErrorAnswer
from projections.reading import READ_RESPONSES, reading
from projections.routes.waiting import AfterQuery, WaitQuery, wait_after
from projections.workers import PROJECTION
from schemas.bounds import MAX_ID_LENGTH

if TYPE_CHECKING:
    from psycopg import AsyncConnection

router = APIRouter(prefix="/v1/agents", tags=["agents"], responses=READ_RESPONSES)

HEALTHY_S = 15.0
UNREACHABLE_S = 30.0
Health = Literal["healthy", "degraded", "unreachable", "stopped"]
TYPE_PREFIX, VERSION_PREFIX = "agent:", "version:"

Capability = Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)]
HealthyQuery = Annotated[float, Query(gt=0, le=86_400, description="seconds of silence an agent stays healthy")]
UnreachableQuery = Annotated[float, Query(gt=0, le=86_400, description="seconds of silence before unreachable")]


class AgentOut(BaseModel):
    agent_id: str
    agent_type: str | None
    version: str | None
    health: Health
    capabilities: list[str]
    slots: int | None
    busy_slots: int
    free_slots: int
    #: the attempts the last heartbeat reported running: its current work
    attempts: list[str]
    last_seen_at: datetime | None
    silent_s: float | None
    registered_at: datetime | None
    deregistered_at: datetime | None
    deregister_reason: str | None


class AgentPage(BaseModel):
    items: list[AgentOut]
    total: int
    healthy_s: float
    unreachable_s: float


#: One row per worker with its health as of now(); a heartbeat older than the registration is a past life's.
_AGENTS = """
SELECT worker_id AS agent_id, capabilities, slots,
       CASE WHEN current THEN busy_slots ELSE 0 END AS busy_slots,
       CASE WHEN current THEN attempts ELSE '[]'::jsonb END AS attempts,
       seen AS last_seen_at, extract(epoch FROM now() - seen)::float8 AS silent_s,
       registered_at, deregistered_at, deregister_reason,
       CASE WHEN stopped THEN 'stopped'
            WHEN seen IS NULL OR seen < now() - make_interval(secs => %(unreachable_s)s) THEN 'unreachable'
            WHEN seen < now() - make_interval(secs => %(healthy_s)s) THEN 'degraded'
            ELSE 'healthy' END AS health
FROM (
    SELECT *, greatest(last_heartbeat_at, registered_at) AS seen,
           (last_heartbeat_at IS NOT NULL AND (registered_at IS NULL OR last_heartbeat_at >= registered_at)) AS current,
           (deregistered_at IS NOT NULL AND (registered_at IS NULL
               OR (deregistered_at, deregistered_event) > (registered_at, registered_event))) AS stopped
    FROM workers
) AS w
"""
_FILTER = (
    "capabilities @> %(capabilities)s::text[]"
    " AND (cardinality(%(health)s::text[]) = 0 OR health = ANY(%(health)s))"
    " AND (%(agent_id)s::text IS NULL OR agent_id = %(agent_id)s)"
)


def _out(row: dict[str, Any]) -> AgentOut:
    caps: list[str] = row["capabilities"]
    kind = next((c.removeprefix(TYPE_PREFIX) for c in caps if c.startswith(TYPE_PREFIX)), None)
    version = next((c.removeprefix(VERSION_PREFIX) for c in caps if c.startswith(VERSION_PREFIX)), None)
    busy = row["busy_slots"]
    free = 0 if row["health"] != "healthy" else max(0, (row["slots"] or 0) - busy)
    attempts = [a for a in row["attempts"] if isinstance(a, str)]
    return AgentOut(**{**row, "attempts": attempts}, agent_type=kind, version=version, free_slots=free)


async def query_agents(
    conn: AsyncConnection[Any],
    *,
    capabilities: list[str] | None = None,
    health: list[str] | None = None,
    agent_id: str | None = None,
    healthy_s: float = HEALTHY_S,
    unreachable_s: float = UNREACHABLE_S,
) -> list[AgentOut]:
    """The agents matching every filter, by id (run inside ``reading(conn, workers PROJECTION)``)."""
    params = {
        "capabilities": sorted(set(capabilities or ())),
        "health": list(health or ()),
        "agent_id": agent_id,
        "healthy_s": healthy_s,
        "unreachable_s": max(unreachable_s, healthy_s),
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        set_json_loads(orjson.loads, cur)
        await cur.execute(f"SELECT * FROM ({_AGENTS}) AS a WHERE {_FILTER} ORDER BY agent_id", params)  # noqa: S608
        return [_out(row) for row in await cur.fetchall()]


@router.get("", response_model=AgentPage)
async def list_route(
    request: Request,
    *,
    capability: Annotated[list[Capability], Query(max_length=100)] = [],  # noqa: B006 - FastAPI copies defaults
    health: Annotated[list[Health], Query()] = [],  # noqa: B006
    healthy_s: HealthyQuery = HEALTHY_S,
    unreachable_s: UnreachableQuery = UNREACHABLE_S,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> AgentPage:
    """Every agent with its health, load and current work; filtered by capabilities (all of) and health."""
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        items = await query_agents(
            conn, capabilities=capability, health=list(health), healthy_s=healthy_s, unreachable_s=unreachable_s
        )
    return AgentPage(items=items, total=len(items), healthy_s=healthy_s, unreachable_s=max(unreachable_s, healthy_s))


@router.get(
    "/{agent_id}", response_model=AgentOut, responses={404: {"model": ErrorAnswer, "description": "no such agent"}}
)
async def get_route(
    request: Request,
    agent_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    *,
    healthy_s: HealthyQuery = HEALTHY_S,
    unreachable_s: UnreachableQuery = UNREACHABLE_S,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> AgentOut:
    """One agent with its health as of now."""
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        found = await query_agents(conn, agent_id=agent_id, healthy_s=healthy_s, unreachable_s=unreachable_s)
    if not found:
        raise HTTPException(404, f"no agent {agent_id!r}")
    return found[0]


# -- why a queued rollout waits -----------------------------------------------------------------------------------
async def _required_capabilities(conn: AsyncConnection[Any], rollout_id: str) -> list[str] | None:
    """A claimable rollout's required capabilities (the lifecycle's own table: no projection lag); None otherwise."""
    cur = await conn.execute(
        "SELECT required_capabilities FROM lifecycle_rollouts"
        " WHERE rollout_id = %s AND status IN ('queuing', 'requeuing')",
        (rollout_id,),
    )
    row = await cur.fetchone()
    return None if row is None else list(row[0])


def describe_wait(required: list[str], healthy: list[AgentOut]) -> str:
    """Why a rollout needing ``required`` is not running yet, given the healthy agents."""
    capable = [a for a in healthy if set(required) <= set(a.capabilities)]
    if capable:
        free = sum(a.free_slots for a in capable)
        if free:
            return f"queued: {len(capable)} healthy capable agents have {free} free slots"
        return f"queued: all slots of the {len(capable)} healthy capable agents are busy"
    missing = sorted(c for c in required if not any(c in a.capabilities for a in healthy))
    if missing:
        return f"no healthy worker has capability {', '.join(missing)}"
    return f"no healthy worker has all of the capabilities {', '.join(sorted(required))}"


async def waiting_reason(request: Request, rollout_id: str) -> str | None:
    """Why a queued rollout waits (None when it is not queued, or when the workers read model has not started)."""
    from projections.errors import ProjectionNotReady

    async with request.app.state.pool.connection() as conn:
        required = await _required_capabilities(conn, rollout_id)
        if required is None:
            return None
        try:
            async with reading(conn, PROJECTION):
                healthy = await query_agents(conn, health=["healthy"])
        except ProjectionNotReady:
            return None
    return describe_wait(required, healthy)


# -- health history -------------------------------------------------------------------------------------------
#: Worker records read at most for one history (the newest): a worker heartbeating every second for a day has 86k.
MAX_HISTORY_RECORDS = 10_000


class HealthChange(BaseModel):
    at: datetime
    health: Health
    #: what showed it: the event type, or ``silence`` for a gap between what the worker sent
    cause: str


class HealthHistory(BaseModel):
    agent_id: str
    changes: list[HealthChange]
    healthy_s: float
    unreachable_s: float


def health_history(
    events: list[tuple[str, datetime]], *, healthy_s: float, unreachable_s: float, now: datetime
) -> list[HealthChange]:
    """The health changes that a worker's events (type, occurred_at; oldest first) imply, up to ``now``.

    Silence longer than ``healthy_s`` after something the worker sent makes it degraded from then, longer than
    ``unreachable_s`` unreachable; its next heartbeat or registration makes it healthy again; a deregistration
    stops it (a later heartbeat does not revive it, as in the read model; a registration does).
    """
    changes: list[HealthChange] = []
    last: datetime | None = None
    stopped = False

    def change(at: datetime, health: Health, cause: str) -> None:
        if not changes or changes[-1].health != health:
            changes.append(HealthChange(at=at, health=health, cause=cause))

    def silence_until(until: datetime) -> None:
        if last is None or stopped:
            return
        if until - last > timedelta(seconds=healthy_s):
            change(last + timedelta(seconds=healthy_s), "degraded", "silence")
        if until - last > timedelta(seconds=unreachable_s):
            change(last + timedelta(seconds=unreachable_s), "unreachable", "silence")

    for kind, at in events:
        silence_until(at)
        if kind == "worker.deregistered":
            change(at, "stopped", kind)
            stopped = True
        elif kind == "worker.registered" or not stopped:
            stopped = False
            change(at, "healthy", kind)
            last = at
    silence_until(now)
    return changes


@router.get(
    "/{agent_id}/history",
    response_model=HealthHistory,
    responses={404: {"model": ErrorAnswer, "description": "no archived event of this agent"}},
)
async def history_route(
    request: Request,
    agent_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    *,
    healthy_s: HealthyQuery = HEALTHY_S,
    unreachable_s: UnreachableQuery = UNREACHABLE_S,
) -> HealthHistory:
    """The agent's health changes, derived from its archived registrations, heartbeats and deregistration."""
    from projections.archive import PROJECTION as ARCHIVE
    from schemas.topics import WORKERS

    topic = WORKERS.full_name(request.app.state.settings.topic_prefix)
    async with request.app.state.pool.connection() as conn, reading(conn, ARCHIVE):
        cur = await conn.execute(
            "SELECT type, (payload->>'occurred_at')::timestamptz FROM (SELECT type, payload, \"offset\" "
            'FROM events WHERE key = %s AND topic = %s ORDER BY "offset" DESC LIMIT %s) AS newest ORDER BY "offset"',
            (agent_id.encode(), topic, MAX_HISTORY_RECORDS),
        )
        rows = await cur.fetchall()
        now_row = await (await conn.execute("SELECT now()")).fetchone()
    if not rows:
        raise HTTPException(404, f"no archived event of agent {agent_id!r}")
    assert now_row is not None
    events = [(str(kind), at) for kind, at in rows if at is not None]
    unreachable = max(unreachable_s, healthy_s)
    changes = health_history(events, healthy_s=healthy_s, unreachable_s=unreachable, now=now_row[0])
    return HealthHistory(agent_id=agent_id, changes=changes, healthy_s=healthy_s, unreachable_s=unreachable)
