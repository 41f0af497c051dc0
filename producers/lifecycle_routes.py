"""The runner protocol: workers register, claim rollouts and report on their attempts; every answer is decided
by the lifecycle write model (:mod:`producers.lifecycle`) and its events reach Kafka through the outbox.

Reports answer 200 with a verdict as soon as the decision is committed (the relay publishes it right after);
a runner never waits for Kafka. Claims long-poll: a dequeue with ``wait_ms`` waits for outbox activity (a new
enqueue or requeue wakes it) without holding a pooled connection while it waits.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, Path, Request

from producers import lifecycle, lifecycle_endings, lifecycle_reports, outbox
from producers.commands import SOURCE, EnvelopeDep, PoolDep, PublisherDep, RelayDep
from producers.lifecycle_models import (
    NAME_PATTERN,
    ClaimOut,
    ClaimsOut,
    DequeueIn,
    FinishIn,
    ReportError,
    ReportIn,
    ReportOut,
    ReportsIn,
    ReportsOut,
    VerdictOut,
    WorkerAccepted,
    WorkerHeartbeatIn,
    WorkerIn,
    WorkerLeftIn,
)
from producers.models import ID_PATTERN
from producers.pipelined import pipelined_transaction
from schemas import ErrorInfo, WorkerDeregistered, WorkerHeartbeat, WorkerRegistered

if TYPE_CHECKING:
    from producers.decider import Verdict

router = APIRouter(prefix="/v1", tags=["runners"])
IdPath = Annotated[str, Path(pattern=ID_PATTERN)]
WorkerPath = Annotated[str, Path(pattern=NAME_PATTERN)]
ClaimKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[!-~]+$",
        description="a dequeue resent with its key (its answer was lost) answers the same claims, claiming no more",
    ),
]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such rollout or attempt"},
    409: {"description": "the attempt was claimed by another worker"},
}


# -- workers ----------------------------------------------------------------------------------------------------
@router.post("/workers/register", status_code=202, response_model=WorkerAccepted)
async def register_worker(
    body: WorkerIn, publisher: PublisherDep, pool: PoolDep, envelope: EnvelopeDep
) -> WorkerAccepted:
    """A runner announces itself: its capabilities and how many attempts it runs at once (slots)."""
    event = WorkerRegistered(
        worker_id=body.worker_id, capabilities=body.capabilities, concurrency=body.slots, **envelope
    )
    async with pool.connection() as conn, pipelined_transaction(conn):
        await outbox.append(conn, publisher, [event])
    return WorkerAccepted(worker_id=body.worker_id)


@router.post("/workers/{worker_id}/heartbeat", status_code=202, response_model=WorkerAccepted)
async def worker_heartbeat(
    worker_id: WorkerPath, body: WorkerHeartbeatIn, publisher: PublisherDep, pool: PoolDep, envelope: EnvelopeDep
) -> WorkerAccepted:
    """The runner is alive; ``stats`` says what it is doing (busy_slots, slots, attempts)."""
    event = WorkerHeartbeat(worker_id=worker_id, stats=body.stats, **envelope)
    async with pool.connection() as conn, pipelined_transaction(conn):
        await outbox.append(conn, publisher, [event])
    return WorkerAccepted(worker_id=worker_id)


@router.post("/workers/{worker_id}/deregister", status_code=202, response_model=WorkerAccepted)
async def deregister_worker(
    worker_id: WorkerPath, body: WorkerLeftIn, publisher: PublisherDep, pool: PoolDep, envelope: EnvelopeDep
) -> WorkerAccepted:
    """The runner leaves. Attempts it still holds end ``unresponsive`` now and are retried by the rules."""
    event = WorkerDeregistered(worker_id=worker_id, reason=body.reason, **envelope)
    async with pool.connection() as conn:
        async with conn.transaction():
            await outbox.append(conn, publisher, [event])
        await lifecycle_endings.abandon_worker(conn, publisher, worker_id, envelope)
    return WorkerAccepted(worker_id=worker_id)


# -- claims -----------------------------------------------------------------------------------------------------
@router.post("/rollouts/dequeue", response_model=ClaimsOut)
async def dequeue(
    body: DequeueIn,
    *,
    publisher: PublisherDep,
    pool: PoolDep,
    relay: RelayDep,
    envelope: EnvelopeDep,
    idempotency_key: ClaimKeyHeader = None,
) -> ClaimsOut:
    """Claim up to ``limit`` rollouts (priority first, then enqueue order, capabilities permitting).

    Each claim creates the rollout's next attempt (``preparing``) exactly once, whatever the concurrency.
    With ``wait_ms``, waits that long for something claimable before answering with no claims. With an
    ``Idempotency-Key`` the worker used before, answers that dequeue's claims still active and claims nothing.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.wait_ms / 1000
    while True:
        async with pool.connection() as conn:
            claimed = await lifecycle.claim(
                conn,
                publisher,
                worker_id=body.worker_id,
                capabilities=body.capabilities,
                limit=body.limit,
                envelope=envelope,
                start=body.start,
                key=idempotency_key,
            )
        if claimed.ids:
            relay.kick()
        # A resend is answered at once, even when its claims have all ended since: its key claims nothing more,
        # so a long poll would only delay the same empty answer.
        if claimed.claims or claimed.resent:
            return ClaimsOut(claims=[ClaimOut(**vars(c)) for c in claimed.claims])
        remaining = deadline - loop.time()
        if remaining <= 0:
            return ClaimsOut(claims=[])
        await relay.wait_activity(min(remaining, 1.0))


# -- reports ----------------------------------------------------------------------------------------------------
def _verdict(verdict: Verdict | None) -> VerdictOut:
    assert verdict is not None
    return VerdictOut(
        rollout_status=verdict.rollout_status,
        attempt_status=verdict.attempt_status,
        cancelled=verdict.cancelled,
        late=verdict.late,
    )


async def _report(
    request: Request, rollout_id: str, attempt_id: str, body: ReportIn, kind: str, **extra: Any
) -> VerdictOut:
    app = request.app
    envelope = {"source": SOURCE, "correlation_id": request.headers.get("X-Correlation-ID")}
    async with app.state.pool.connection() as conn:
        outcome = await lifecycle.report(
            conn,
            app.state.publisher,
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            worker_id=body.worker_id,
            kind=kind,
            envelope=envelope,
            **extra,
        )
    if outcome.outbox_ids:
        app.state.relay.kick()
    return _verdict(outcome.verdict)


@router.post("/rollouts/{rollout_id}/attempts/{attempt_id}/running", response_model=VerdictOut, responses=_RESPONSES)
async def report_running(request: Request, rollout_id: IdPath, attempt_id: IdPath, body: ReportIn) -> VerdictOut:
    """The runner started working on its attempt: the attempt (and the rollout) become ``running``."""
    return await _report(request, rollout_id, attempt_id, body, "running")


@router.post("/rollouts/{rollout_id}/attempts/{attempt_id}/heartbeat", response_model=VerdictOut, responses=_RESPONSES)
async def report_heartbeat(request: Request, rollout_id: IdPath, attempt_id: IdPath, body: ReportIn) -> VerdictOut:
    """The attempt is alive (pushes its unresponsive deadline). ``cancelled`` in the answer says: stop it."""
    return await _report(request, rollout_id, attempt_id, body, "heartbeat")


@router.post("/rollouts/{rollout_id}/attempts/{attempt_id}/finish", response_model=VerdictOut, responses=_RESPONSES)
async def report_finish(request: Request, rollout_id: IdPath, attempt_id: IdPath, body: FinishIn) -> VerdictOut:
    """The attempt's outcome. The rollout succeeds, fails, or is requeued by its config's retry rules."""
    error = None if body.error is None else ErrorInfo(**body.error.model_dump())
    return await _report(request, rollout_id, attempt_id, body, "finish", status=body.status, error=error)


@router.post("/workers/{worker_id}/reports", response_model=ReportsOut)
async def report_many(
    worker_id: WorkerPath,
    *,
    body: ReportsIn,
    publisher: PublisherDep,
    pool: PoolDep,
    relay: RelayDep,
    envelope: EnvelopeDep,
) -> ReportsOut:
    """Many reports of this worker's attempts (``running``, ``heartbeat``, ``finish`` with the attempt's spans and
    rewards), decided in one transaction in the order sent.

    Each report is answered as its single-report route answers it (a verdict), or refused alone (``error``: 404 no
    such rollout or attempt, 409 another worker's attempt) while the others are decided. A finish's spans and
    rewards are recorded with its decision, once per attempt: resending the batch after a lost answer records
    nothing twice.
    """
    async with pool.connection() as conn:
        answers, ids = await lifecycle_reports.report_many(
            conn, publisher, worker_id=worker_id, reports=body.reports, envelope=envelope
        )
    if ids:
        relay.kick()
    return ReportsOut(
        results=[
            ReportOut(error=ReportError(status_code=a.status_code, detail=a.detail))
            if isinstance(a, lifecycle_reports.Refused)
            else ReportOut(verdict=_verdict(a))
            for a in answers
        ]
    )
