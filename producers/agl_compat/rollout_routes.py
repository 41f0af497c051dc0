"""v0.3 rollout and attempt routes: get, search, latest attempt, and updates.

Updates are our lifecycle's decisions, never a field overwrite: an attempt's ``status`` becomes a runner report
(``running``, ``succeeded``, ``failed``), a ``last_heartbeat_time`` a heartbeat, a rollout's ``cancelled`` a cancel.
What no event of ours records (a rollout's input, mode, resources or config after enqueue; metadata; a status the
watchdog decides) is refused with 400 naming the field; see docs/agent-lightning-migration.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request

from producers import lifecycle, lifecycle_endings
from producers.agl_compat import paging, reads, write_model
from producers.agl_compat.deps import RESPONSES, Services, json_object, reject_nulls, services
from producers.agl_compat.models import Attempt, AttemptedRollout, Page, Rollout
from producers.http import ErrorAnswer

router = APIRouter(prefix="/v1/agl", tags=["agent-lightning v0.3"], responses=RESPONSES)
ServicesDep = Annotated[Services, Depends(services)]
_LIST_PARAMS = ("status_in", "rollout_id_in")


def _query_body(request: Request) -> dict[str, Any]:
    """A GET's query parameters as a search body (lists repeated: ``?status_in=a&status_in=b``)."""
    params = request.query_params
    body: dict[str, Any] = {}
    for key in params:
        values = params.getlist(key)
        if key in _LIST_PARAMS:
            body[key] = values
        elif key in ("limit", "offset"):
            try:
                body[key] = int(values[-1])
            except ValueError as e:
                raise HTTPException(400, f"{key} must be an integer") from e
        else:
            body[key] = values[-1]
    return body


async def _search_rollouts(svc: Services, body: dict[str, Any]) -> Page:
    limit, offset, sort_by, order = paging.validate(body, Rollout)
    status_in, ids_in = body.get("status_in"), body.get("rollout_id_in")
    contains, logic = body.get("rollout_id_contains"), body.get("filter_logic", "and")
    if logic == "and" and (status_in == [] or ids_in == []):
        return Page(items=[], limit=limit, offset=offset, total=0)
    if logic == "and" and contains is None and sort_by is None:
        # The read model's own order (enqueue order) and paging: one query.
        items, total = await reads.rollouts(
            svc.pool,
            status=status_in or (),
            rollout_ids=ids_in or (),
            limit=reads.MAX_SCAN if limit == -1 else limit,
            offset=offset,
        )
        return Page(items=items, limit=limit, offset=offset, total=total)
    if logic == "and":
        found, _ = await reads.rollouts(svc.pool, status=status_in or (), rollout_ids=ids_in or ())
    else:
        found, _ = await reads.rollouts(svc.pool)
    kept = []
    for r in found:
        tests: dict[str, bool] = {}
        if status_in is not None:
            tests["status"] = r.status in status_in
        if ids_in is not None:
            tests["ids"] = r.rollout_id in ids_in
        if contains is not None:
            tests["contains"] = str(contains) in r.rollout_id
        if paging.matches(tests, logic):
            kept.append(r)
    return paging.page(kept, limit, offset, sort_by, order)


@router.get("/rollouts", response_model=Page)
async def query_rollouts(request: Request, svc: ServicesDep) -> Page:
    return await _search_rollouts(svc, _query_body(request))


@router.post("/rollouts/search", response_model=Page)
async def search_rollouts(request: Request, svc: ServicesDep) -> Page:
    return await _search_rollouts(svc, await json_object(request, allow_empty=True))


@router.get("/rollouts/{rollout_id}", response_model=AttemptedRollout | Rollout | None)
async def get_rollout(rollout_id: str, svc: ServicesDep) -> AttemptedRollout | Rollout | None:
    """The rollout with its newest attempt; ``null`` when there is none (theirs answers 500)."""
    found = await reads.rollout_as_decided(svc.pool, rollout_id)
    return None if found is None else found[0]


@router.post("/rollouts/{rollout_id}", response_model=Rollout, responses={404: {"description": "no such rollout"}})
async def update_rollout(rollout_id: str, request: Request, svc: ServicesDep) -> Rollout:
    """Only ``status: cancelled`` changes a rollout (a cancel: final); other fields must equal what is stored."""
    body = await json_object(request)
    reject_nulls(body, ("status", "config"))
    async with svc.pool.connection() as conn:
        current = await write_model.rollout(conn, rollout_id)
        if current is None:
            raise HTTPException(404, f"no rollout {rollout_id!r}")
        for field, value in body.items():
            if field == "status" and value == "cancelled":
                continue
            now = current.config.model_dump() if field == "config" else getattr(current, field, None)
            if field not in Rollout.model_fields or value != now:
                raise HTTPException(
                    400, f"{field} cannot be changed here: rollouts are recorded as events, only a cancel is one"
                )
        if body.get("status") == "cancelled":
            ids = await lifecycle_endings.cancel(
                conn, svc.publisher, rollout_id, "cancelled by update_rollout", svc.envelope
            )
            if ids:
                svc.relay.kick()
        after = await write_model.rollout(conn, rollout_id)
    assert after is not None
    return Rollout(**after.model_dump(exclude={"attempt"}))


@router.post(
    "/rollouts/{rollout_id}/attempts",
    status_code=201,
    response_model=AttemptedRollout,
    responses={409: {"model": ErrorAnswer, "description": "never offered: attempts follow the rollout's config"}},
)
async def start_attempt(rollout_id: str) -> AttemptedRollout:
    """Not offered: retries are decided by the rollout's config (``max_attempts``, ``retry_condition``).

    409, not 501: the request is understood and refused for this API's rules, which retrying will not change.
    """
    raise HTTPException(409, f"start_attempt is not offered: {rollout_id} is retried by its config's rules")


async def _attempts(svc: Services, rollout_id: str, body: dict[str, Any]) -> Page:
    limit, offset, sort_by, order = paging.validate({"sort_by": "sequence_id", **body}, Attempt)
    found = await reads.rollout_as_decided(svc.pool, rollout_id)
    return paging.page(found[1] if found else [], limit, offset, sort_by, order)


@router.get("/rollouts/{rollout_id}/attempts", response_model=Page)
async def query_attempts(rollout_id: str, request: Request, svc: ServicesDep) -> Page:
    return await _attempts(svc, rollout_id, _query_body(request))


@router.post("/rollouts/{rollout_id}/attempts/search", response_model=Page)
async def search_attempts(rollout_id: str, request: Request, svc: ServicesDep) -> Page:
    return await _attempts(svc, rollout_id, await json_object(request, allow_empty=True))


@router.get("/rollouts/{rollout_id}/attempts/latest", response_model=Attempt | None)
async def latest_attempt(rollout_id: str, svc: ServicesDep) -> Attempt | None:
    found = await reads.rollout_as_decided(svc.pool, rollout_id)
    if found is None or not isinstance(found[0], AttemptedRollout):
        return None
    return found[0].attempt


#: An attempt status a client may report, and the report it is.
_REPORTS = {"running": "running", "succeeded": "finish", "failed": "finish"}


@router.post(
    "/rollouts/{rollout_id}/attempts/{attempt_id}",
    response_model=Attempt,
    responses={404: {"description": "no such attempt"}, 409: {"description": "another worker's attempt"}},
)
async def update_attempt(rollout_id: str, attempt_id: str, request: Request, svc: ServicesDep) -> Attempt:
    """A runner's report on its attempt (``latest`` names the newest): decided by our lifecycle's rules, so a report
    on an attempt that has ended is recorded as late and changes nothing (the answer shows the attempt as it is)."""
    body = await json_object(request)
    reject_nulls(body, ("status", "worker_id", "last_heartbeat_time", "metadata"))
    status = body.get("status")
    if status is not None and status not in _REPORTS and status != "preparing":
        raise HTTPException(400, f"status {status!r} is decided by the watchdog here, not reported by clients")
    if "metadata" in body:
        raise HTTPException(400, "metadata cannot be changed here: an attempt's metadata is not recorded as an event")
    async with svc.pool.connection() as conn:
        current = await write_model.attempt(conn, rollout_id, attempt_id)
        if current is None:
            raise HTTPException(404, f"no attempt {attempt_id!r} of rollout {rollout_id!r}")
        worker_id = body.get("worker_id", current.worker_id)
        if worker_id != current.worker_id:
            raise HTTPException(409, f"attempt {current.attempt_id!r} was claimed by worker {current.worker_id!r}")
        kinds = []
        if "last_heartbeat_time" in body:
            kinds.append("heartbeat")
        if status in _REPORTS:
            kinds.append(_REPORTS[status])
        for kind in kinds:
            extra: dict[str, Any] = {"status": status} if kind == "finish" else {}
            outcome = await lifecycle.report(
                conn,
                svc.publisher,
                rollout_id=rollout_id,
                attempt_id=current.attempt_id,
                worker_id=str(worker_id),
                kind=kind,
                envelope=svc.envelope,
                **extra,
            )
            if outcome.outbox_ids:
                svc.relay.kick()
        after = await write_model.attempt(conn, rollout_id, current.attempt_id)
    assert after is not None
    return after
