"""v0.3 queue routes: enqueue, dequeue, start a rollout (create and claim at once), wait for rollouts.

Enqueues and claims are the same decisions as our own API's (:mod:`producers.idempotency`,
:mod:`producers.lifecycle`): committed with their events to the outbox, published by the relay right after.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from producers import latest_resources, lifecycle
from producers.agl_compat import write_model
from producers.agl_compat.deps import ANONYMOUS_WORKER, RESPONSES, Services, as_422, services
from producers.agl_compat.models import (
    AttemptedRollout,
    DequeueRequest,
    EnqueueManyRequest,
    EnqueueRolloutRequest,
    Rollout,
    StartRolloutRequest,
    WaitRequest,
)
from producers.agl_compat.reads import latest_resources_id, terminal_rollouts
from producers.commands import new_id
from producers.idempotency import request_hash, reserve_rollouts
from producers.models import RolloutIn
from schemas import RolloutEnqueued

router = APIRouter(prefix="/v1/agl", tags=["agent-lightning v0.3"], responses=RESPONSES)
ServicesDep = Annotated[Services, Depends(services)]
#: A started rollout is enqueued at the highest priority, claimable only with its own capability, so the claim
#: that follows takes it and no other runner can.
START_PRIORITY = 1_000_000
#: The longest a wait answers after: their client gives a request 30 s.
MAX_WAIT_S = 25.0


async def _latest_resources_id(svc: Services) -> str | None:
    """The latest resources as the write side recorded them; the read model's only for resources published before
    the write side kept that register."""
    async with svc.pool.connection() as conn:
        recorded = await latest_resources.latest_resources_id(conn)
    return recorded or await latest_resources_id(svc.pool)


def _rollout_in(item: EnqueueRolloutRequest, resources_id: str | None, **extra: Any) -> RolloutIn:
    config = item.config.model_dump() if item.config is not None else {}
    return RolloutIn(
        input=item.input,
        mode=item.mode,
        resources_id=item.resources_id or resources_id,
        config=config,
        metadata=item.metadata or {},
        **extra,
    )


async def _enqueue(svc: Services, items: list[RolloutIn]) -> list[RolloutEnqueued]:
    planned = []
    for item in items:
        fields = {k: getattr(item, k) for k in type(item).model_fields if k != "rollout_id"}
        event = RolloutEnqueued(rollout_id=item.rollout_id or new_id("ro"), **fields, **svc.envelope)
        planned.append((event, request_hash(item.model_copy(update={"rollout_id": None}))))
    async with svc.pool.connection() as conn:
        await reserve_rollouts(conn, svc.publisher, planned)
    svc.relay.kick()
    return [e for e, _ in planned]


def _queued(event: RolloutEnqueued) -> Rollout:
    return Rollout(
        rollout_id=event.rollout_id,
        input=event.input,
        start_time=event.occurred_at.timestamp(),
        mode=event.mode,
        resources_id=event.resources_id,
        status="queuing",
        config=event.config.model_dump(mode="json"),
        metadata=dict(event.metadata),
    )


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/queues/rollouts/enqueue", status_code=201, response_model=list[Rollout])
async def enqueue(body: EnqueueManyRequest, svc: ServicesDep) -> list[Rollout]:
    """Enqueue rollouts; one without ``resources_id`` is pinned to the latest resources, as theirs."""
    resources_id = await _latest_resources_id(svc)
    with as_422():
        items = [_rollout_in(item, resources_id) for item in body.rollouts]
    events = await _enqueue(svc, items)
    return [_queued(e) for e in events]


async def _claim(svc: Services, worker_id: str, capabilities: list[str], limit: int) -> list[AttemptedRollout]:
    async with svc.pool.connection() as conn:
        claimed = await lifecycle.claim(
            conn, svc.publisher, worker_id=worker_id, capabilities=capabilities, limit=limit, envelope=svc.envelope
        )
        if claimed.ids:
            svc.relay.kick()
        answers = []
        for claim in claimed.claims:
            found = await write_model.rollout(conn, claim.rollout_id)
            assert isinstance(found, AttemptedRollout)
            answers.append(found)
    return answers


@router.post("/queues/rollouts/dequeue", response_model=list[AttemptedRollout])
async def dequeue(body: DequeueRequest, svc: ServicesDep) -> list[AttemptedRollout]:
    """Claim up to ``limit`` rollouts: each gets its next attempt, ``preparing`` (no wait: theirs does not)."""
    return await _claim(svc, body.worker_id or ANONYMOUS_WORKER, [], body.limit)


@router.post("/rollouts", status_code=201, response_model=AttemptedRollout)
async def start_rollout(body: StartRolloutRequest, svc: ServicesDep) -> AttemptedRollout:
    """Create a rollout and claim it at once (their ``start_rollout``): an enqueue and a claim, as events."""
    resources_id = await _latest_resources_id(svc)
    rollout_id = new_id("ro")
    only_this = f"agl-start:{rollout_id}"
    with as_422():
        item = _rollout_in(body, resources_id, priority=START_PRIORITY, required_capabilities=(only_this,))
    item = item.model_copy(update={"rollout_id": rollout_id})
    await _enqueue(svc, [item])
    claimed = await _claim(svc, body.worker_id or ANONYMOUS_WORKER, [only_this], 1)
    if not claimed or claimed[0].rollout_id != rollout_id:  # pragma: no cover - only a max-priority twin can win
        raise HTTPException(409, f"rollout {rollout_id} was enqueued but another rollout was claimed first")
    return claimed[0]


@router.post("/waits/rollouts", response_model=list[Rollout])
async def wait_for_rollouts(body: WaitRequest, svc: ServicesDep) -> list[Rollout]:
    """The rollouts among ``rollout_ids`` that have ended, once all have or ``timeout`` passed (at most 25 s)."""
    timeout = MAX_WAIT_S if body.timeout is None else max(0.0, min(body.timeout, MAX_WAIT_S))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    wanted = list(dict.fromkeys(body.rollout_ids))
    while True:
        done = await terminal_rollouts(svc.pool, wanted)
        if len(done) == len(wanted) or loop.time() >= deadline:
            return done
        await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))
