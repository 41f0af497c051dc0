"""v0.3 workers: a heartbeat (``worker.heartbeat``, through our runner protocol's route) that also keeps the
worker's attempts alive (their known defect fixed: a worker's heartbeat counts as its attempts' liveness), and
reads from the workers read model."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.exceptions import RequestValidationError

from producers import lifecycle, lifecycle_routes
from producers.agl_compat import paging, reads, write_model
from producers.agl_compat.deps import RESPONSES, Services, json_object, reject_nulls, services
from producers.agl_compat.models import Page, Worker
from producers.lifecycle_models import WorkerHeartbeatIn
from schemas.bounds import ID_PATTERN

router = APIRouter(prefix="/v1/agl", tags=["agent-lightning v0.3"], responses=RESPONSES)
ServicesDep = Annotated[Services, Depends(services)]
WorkerPath = Annotated[str, Path(pattern=ID_PATTERN)]


async def _search(svc: Services, body: dict[str, Any]) -> Page:
    limit, offset, sort_by, order = paging.validate(body, Worker)
    status_in, contains = body.get("status_in"), body.get("worker_id_contains")
    logic = body.get("filter_logic", "and")
    kept = []
    for w in await reads.workers(svc.pool):
        tests: dict[str, bool] = {}
        if status_in is not None:
            tests["status"] = w.status in status_in
        if contains is not None:
            tests["contains"] = str(contains) in w.worker_id
        if paging.matches(tests, logic):
            kept.append(w)
    return paging.page(kept, limit, offset, sort_by, order)


@router.get("/workers", response_model=Page)
async def query_workers(request: Request, svc: ServicesDep) -> Page:
    params = request.query_params
    body: dict[str, Any] = {k: params.getlist(k) if k == "status_in" else params[k] for k in params}
    for key in ("limit", "offset"):
        if key in body and str(body[key]).lstrip("-").isdigit():
            body[key] = int(body[key])
    return await _search(svc, body)


@router.post("/workers/search", response_model=Page)
async def search_workers(request: Request, svc: ServicesDep) -> Page:
    return await _search(svc, await json_object(request, allow_empty=True))


@router.get("/workers/{worker_id}", response_model=Worker | None)
async def get_worker(worker_id: str, svc: ServicesDep) -> Worker | None:
    found = await reads.workers(svc.pool, worker_id)
    return found[0] if found else None


# After /workers/search: a worker id is any other path segment.
@router.post("/workers/{worker_id}", response_model=Worker)
async def update_worker(worker_id: WorkerPath, request: Request, svc: ServicesDep) -> Worker:
    body = await json_object(request, allow_empty=True)
    reject_nulls(body, ("heartbeat_stats",))
    stats = body.get("heartbeat_stats") or {}
    if not isinstance(stats, dict):
        error = {"type": "dict_type", "loc": ("body", "heartbeat_stats"), "msg": "must be an object"}
        raise RequestValidationError([error])
    await lifecycle_routes.worker_heartbeat(
        worker_id, WorkerHeartbeatIn(stats=stats), svc.publisher, svc.pool, svc.envelope
    )
    async with svc.pool.connection() as conn:
        active = await write_model.active_attempts(conn, worker_id)
        for rollout_id, attempt_id in active:
            outcome = await lifecycle.report(
                conn,
                svc.publisher,
                rollout_id=rollout_id,
                attempt_id=attempt_id,
                worker_id=worker_id,
                kind="heartbeat",
                envelope=svc.envelope,
            )
            if outcome.outbox_ids:
                svc.relay.kick()
    current = active[0] if active else (None, None)
    return Worker(
        worker_id=worker_id,
        status="busy" if active else "idle",
        heartbeat_stats=stats,
        last_heartbeat_time=time.time(),
        current_rollout_id=current[0],
        current_attempt_id=current[1],
    )
