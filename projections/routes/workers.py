"""``GET /v1/workers`` and ``GET /v1/workers/{worker_id}``: the workers read model, with a status as of now."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel

from projections.reading import READ_RESPONSES, not_found, reading
from projections.routes.waiting import AfterQuery, WaitQuery, wait_after
from projections.workers import PROJECTION, WorkerView, get_worker, list_workers
from schemas.bounds import BIGINT_MAX, MAX_ID_LENGTH

router = APIRouter(prefix="/v1/workers", tags=["workers"], responses=READ_RESPONSES)

#: A worker not heard from for this long is ``unknown`` (runners heartbeat every few seconds).
DEFAULT_STALE_S = 30.0

WorkerStatus = Literal["idle", "busy", "unknown", "stopped"]
StaleQuery = Annotated[
    float, Query(gt=0, le=86_400, description="seconds without a heartbeat after which a worker is unknown")
]


class WorkerOut(BaseModel):
    worker_id: str
    status: WorkerStatus
    capabilities: list[str]
    slots: int | None
    busy_slots: int
    #: the attempts the last heartbeat reported running (empty when stopped or from before a re-registration)
    attempts: list[str]
    last_heartbeat_at: datetime | None
    registered_at: datetime | None
    deregistered_at: datetime | None
    deregister_reason: str | None
    stats: Any = None


class WorkerPage(BaseModel):
    items: list[WorkerOut]
    total: int
    limit: int
    offset: int


def _out(view: WorkerView) -> WorkerOut:
    return WorkerOut.model_validate(vars(view))


@router.get("", response_model=WorkerPage)
async def list_route(
    request: Request,
    *,
    status: Annotated[list[WorkerStatus], Query()] = [],  # noqa: B006 - FastAPI copies query defaults
    stale_s: StaleQuery = DEFAULT_STALE_S,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> WorkerPage:
    """Workers by id, filtered by status (repeatable), with the total number of matches."""
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        rows, total = await list_workers(conn, stale_s=stale_s, status=status, limit=limit, offset=offset)
    return WorkerPage(items=[_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{worker_id}", response_model=WorkerOut, responses=not_found("worker"))
async def get_route(
    request: Request,
    worker_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    *,
    stale_s: StaleQuery = DEFAULT_STALE_S,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> WorkerOut:
    """One worker and its status as of now."""
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        found = await get_worker(conn, worker_id, stale_s=stale_s)
    if found is None:
        raise HTTPException(404, f"no worker {worker_id!r}")
    return _out(found)
