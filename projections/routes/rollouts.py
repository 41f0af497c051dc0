"""``GET /v1/rollouts`` and ``GET /v1/rollouts/{rollout_id}``: the rollouts read model."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from producers.http import ErrorAnswer
from projections.reading import READ_RESPONSES, reading
from projections.rollouts import PROJECTION, AttemptRow, RolloutRow, get_attempts, get_rollout, list_rollouts
from projections.routes.agents import waiting_reason
from projections.routes.waiting import wait_after
from schemas import RolloutMode, RolloutStatus
from schemas.bounds import BIGINT_MAX, ID_PATTERN, Id

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"], responses=READ_RESPONSES)

#: How long a read may wait for ``?after=`` at most, whatever ``wait_ms`` asks.
MAX_WAIT_MS = 30_000
#: A token names one position per partition: a few thousand characters cover any deployment.
MAX_TOKEN_LENGTH = 10_000


class AttemptOut(BaseModel):
    attempt_id: str
    sequence_id: int | None
    worker_id: str | None
    status: str
    start_time: datetime | None
    end_time: datetime | None
    last_heartbeat_time: datetime | None
    error: Any = None
    metadata: Any = None
    late_reports: int = Field(default=0, description="reports that came after the attempt had ended (changed nothing)")


class RolloutOut(BaseModel):
    rollout_id: str
    status: str
    enqueued: bool
    input: Any = None
    mode: str | None
    resources_id: str | None
    config: Any = None
    metadata: Any = None
    priority: int
    enqueued_at: datetime | None
    cancelled_at: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    attempt_count: int
    latest_attempt_id: str | None
    latest_attempt: AttemptOut | None = Field(default=None, description="the newest attempt, inline")


class RolloutDetail(RolloutOut):
    attempts: list[AttemptOut]
    waiting: str | None = Field(
        default=None, description="a queued rollout: why it waits (e.g. no healthy worker has a capability it needs)"
    )


class RolloutPage(BaseModel):
    items: list[RolloutOut]
    total: int
    limit: int
    offset: int


def _out(row: RolloutRow, latest: AttemptRow | None = None) -> RolloutOut:
    data = {k: v for k, v in vars(row).items() if k in RolloutOut.model_fields}
    return RolloutOut(**data, latest_attempt=None if latest is None else _attempt(latest))


def _attempt(row: AttemptRow) -> AttemptOut:
    return AttemptOut(**{k: v for k, v in vars(row).items() if k in AttemptOut.model_fields})


async def _wait(request: Request, after: str | None, wait_ms: int) -> None:
    """Wait for ``?after=`` before taking the read's connection: the wait itself holds none."""
    await wait_after(request, PROJECTION, after, wait_ms)


AfterQuery = Annotated[
    str | None,
    Query(max_length=MAX_TOKEN_LENGTH, description="a position token from the command API: wait until applied"),
]
WaitQuery = Annotated[int, Query(ge=0, le=MAX_WAIT_MS, description="how long to wait for ?after=, in ms")]


@router.get("", response_model=RolloutPage)
async def list_route(
    request: Request,
    *,
    status: Annotated[list[RolloutStatus], Query()] = [],  # noqa: B006 - FastAPI copies query defaults
    mode: RolloutMode | None = None,
    rollout_id: Annotated[list[Id], Query(max_length=1000)] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> RolloutPage:
    """Rollouts filtered by status (repeatable), mode and ids, oldest first, with the total number of matches."""
    await _wait(request, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        rows, total = await list_rollouts(
            conn, status=status, mode=mode, rollout_ids=rollout_id, limit=limit, offset=offset
        )
        latest = await get_attempts(conn, [r.latest_attempt_id for r in rows if r.latest_attempt_id])
    items = [_out(r, latest.get(r.latest_attempt_id or "")) for r in rows]
    return RolloutPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{rollout_id}",
    response_model=RolloutDetail,
    responses={404: {"model": ErrorAnswer, "description": "no such rollout"}},
)
async def get_route(
    request: Request,
    rollout_id: Annotated[str, Path(pattern=ID_PATTERN)],
    *,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> RolloutDetail:
    """One rollout with its attempts."""
    await _wait(request, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        found = await get_rollout(conn, rollout_id)
    if found is None:
        raise HTTPException(404, f"no rollout {rollout_id!r}")
    row, attempts = found
    latest = next((a for a in attempts if a.attempt_id == row.latest_attempt_id), None)
    waiting = await waiting_reason(request, rollout_id) if row.status in ("queuing", "requeuing") else None
    return RolloutDetail(**_out(row, latest).model_dump(), attempts=[_attempt(a) for a in attempts], waiting=waiting)


@router.get(
    "/{rollout_id}/attempts",
    response_model=list[AttemptOut],
    responses={404: {"model": ErrorAnswer, "description": "no such rollout"}},
)
async def attempts_route(
    request: Request,
    rollout_id: Annotated[str, Path(pattern=ID_PATTERN)],
    *,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> list[AttemptOut]:
    """A rollout's attempts, in sequence order (with their late reports)."""
    await _wait(request, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        found = await get_rollout(conn, rollout_id)
    if found is None:
        raise HTTPException(404, f"no rollout {rollout_id!r}")
    return [_attempt(a) for a in found[1]]
