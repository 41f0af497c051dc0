"""Agent Lightning v0.1's task server routes, at the root path (its client discards any path prefix):
``GET /task``, ``GET /resources/latest``, ``GET /resources/{id}``, ``POST /rollout``.

A task is a claim (:func:`producers.lifecycle.claim`); a posted rollout is its spans (``trace``, the SDK's JSON),
its ``final_reward`` as a reward and a ``succeeded`` report, committed together through the outbox once (a resent
rollout publishes nothing new). Their client caches resources by id for ever, so the ids it sees name one version:
``<resources_id>@v<version>``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field, JsonValue

from producers import lifecycle, requests
from producers.agl_compat import write_model
from producers.agl_compat.convert import resource_out
from producers.agl_compat.deps import RESPONSES, Services, as_422, services
from producers.agl_compat.otel_json import span_request
from producers.idempotency import next_number, request_hash
from producers.models import RewardIn
from projections import resources as resources_model
from projections.reading import not_found, reading
from schemas import Event, RewardAssigned, SpanRecorded

router = APIRouter(tags=["agent-lightning v0.1"], responses=RESPONSES)
ServicesDep = Annotated[Services, Depends(services)]
#: The worker v0.1 clients claim as (their protocol names none).
V01_WORKER = "agl-compat-v01"
_VERSION_MARK = "@v"


class TaskV01(BaseModel):
    rollout_id: str
    input: Any = None
    mode: str | None = None
    resources_id: str | None = None
    create_time: float
    last_claim_time: float
    num_claims: int
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaskIfAny(BaseModel):
    is_available: bool
    task: TaskV01 | None = None


class ResourcesV01(BaseModel):
    resources_id: str
    create_time: float
    update_time: float
    version: int
    resources: dict[str, dict[str, Any]]


class RolloutV01(BaseModel):
    rollout_id: str
    final_reward: float | None = Field(default=None, allow_inf_nan=False)
    triplets: list[dict[str, Any]] | None = None
    trace: list[dict[str, Any]] | None = None
    logs: list[str] | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    task: dict[str, Any] | None = None


class GenericResponse(BaseModel):
    status: str
    message: str | None = None
    data: Any = None


async def _resources(svc: Services, resources_id: str | None) -> ResourcesV01 | None:
    rid, version = None, None
    if resources_id is not None:
        rid, _, number = resources_id.rpartition(_VERSION_MARK)
        if not rid or not number.isdigit():
            rid, version = resources_id, None
        else:
            version = int(number)
    async with svc.pool.connection() as conn, reading(conn, resources_model.PROJECTION):
        if rid is None:
            found = await resources_model.latest_resources(conn)
        else:
            found = await resources_model.get_resources(conn, rid, version)
    if found is None:
        return None
    created = found.created_at.timestamp()
    return ResourcesV01(
        resources_id=f"{found.resources_id}{_VERSION_MARK}{found.resources_version}",
        create_time=created,
        update_time=created,
        version=found.resources_version,
        resources={name: resource_out(r) for name, r in found.resources.items()},
    )


@router.get("/task", response_model=TaskIfAny)
async def next_task(svc: ServicesDep) -> TaskIfAny:
    """Claim the next rollout (never 404 or 503: an empty answer says to poll again)."""
    async with svc.pool.connection() as conn:
        claimed = await lifecycle.claim(
            conn, svc.publisher, worker_id=V01_WORKER, capabilities=(), limit=1, envelope=svc.envelope
        )
        if claimed.ids:
            svc.relay.kick()
        claims = claimed.claims
        rollout = await write_model.rollout(conn, claims[0].rollout_id) if claims else None
    if rollout is None or not claims:
        return TaskIfAny(is_available=False)
    claim = claims[0]
    resources_id = None
    if claim.resources_id is not None:
        pinned = await _resources(svc, claim.resources_id)
        resources_id = pinned.resources_id if pinned else claim.resources_id
    attempt = getattr(rollout, "attempt", None)
    task = TaskV01(
        rollout_id=claim.rollout_id,
        input=claim.input,
        mode=claim.mode,
        resources_id=resources_id,
        create_time=rollout.start_time,
        last_claim_time=attempt.start_time if attempt else rollout.start_time,
        num_claims=claim.sequence_id,
        metadata=claim.metadata,
    )
    return TaskIfAny(is_available=True, task=task)


@router.get("/resources/latest", response_model=ResourcesV01, responses=not_found("resources (none set yet)"))
async def latest_resources_v01(svc: ServicesDep) -> ResourcesV01:
    found = await _resources(svc, None)
    if found is None:
        raise HTTPException(404, "No resources have been set on the server.")
    return found


@router.get("/resources/{resource_id}", response_model=ResourcesV01, responses=not_found("resources id"))
async def resources_v01(resource_id: str, svc: ServicesDep) -> ResourcesV01:
    found = await _resources(svc, resource_id)
    if found is None:
        raise HTTPException(404, f"Resource ID '{resource_id}' not found.")
    return found


@router.post("/rollout", response_model=GenericResponse, responses=not_found("rollout handed out as a task"))
async def post_rollout(body: RolloutV01, svc: ServicesDep) -> GenericResponse:
    """A finished task: its spans, its reward and its end (``succeeded``), recorded once.

    ``triplets`` and ``logs`` are not recorded: here triplets are derived from the spans and rewards.
    """
    async with svc.pool.connection() as conn:
        attempt = await write_model.attempt(conn, body.rollout_id, "latest")
        if attempt is None:
            raise HTTPException(404, f"no rollout {body.rollout_id!r} was handed out as a task")
        with as_422():
            spans = [span_request(s, body.rollout_id, attempt.attempt_id) for s in body.trace or []]

        async def build(c: Any) -> tuple[list[Event], dict[str, Any]]:
            events: list[Event] = []
            if spans:
                first = await next_number(c, "span_sequence", body.rollout_id, len(spans)) - len(spans) + 1
                for n, span in enumerate(spans):
                    fields = {k: getattr(span, k) for k in type(span).model_fields if k != "sequence_id"}
                    events.append(SpanRecorded(sequence_id=first + n, **fields, **svc.envelope))
            if body.final_reward is not None:
                reward = RewardIn(rollout_id=body.rollout_id, attempt_id=attempt.attempt_id, value=body.final_reward)
                events.append(RewardAssigned(**dict(reward), **svc.envelope))
            return events, {}

        key = f"{body.rollout_id}/{attempt.attempt_id}"
        await requests._commit(  # commit_once without its wait for the publish
            conn, svc.publisher, route="agl-v01-rollout", key=key, digest=request_hash(body), build=build
        )
        await lifecycle.report(
            conn,
            svc.publisher,
            rollout_id=body.rollout_id,
            attempt_id=attempt.attempt_id,
            worker_id=attempt.worker_id or V01_WORKER,
            kind="finish",
            envelope=svc.envelope,
            status="succeeded",
        )
    svc.relay.kick()
    return GenericResponse(status="ok", message=f"Rollout {body.rollout_id} received and stored.")
