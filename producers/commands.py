"""The command API: requests in, events on Kafka out, answered 202 with the event ids and a position token.

Every route validates its whole body before publishing anything, so a rejected request (422, 413, 409)
leaves no event behind. ``position`` in an answer is accepted by read routes as ``?after=``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError

from producers import lifecycle_endings
from producers.http import one_or_many, one_or_many_openapi
from producers.idempotency import (
    ids_for_key,
    next_number,
    request_hash,
    reserve_rollouts,
    send_key_binding,
    stored_rollouts,
)
from producers.latest_resources import latest_resources_id, record_latest, send_latest_read
from producers.models import (
    ID_PATTERN,
    Accepted,
    CancelIn,
    DocumentAccepted,
    DocumentIn,
    ResourcesAccepted,
    ResourcesIn,
    RewardIn,
    RolloutAccepted,
    RolloutIn,
    RolloutsAccepted,
    SpanIn,
    SpansAccepted,
)
from producers.outbox import OutboxRelay
from producers.publisher import EventPublisher
from producers.requests import Committed, commit_once, event_ids, wait_positions
from producers.router import routed
from producers.span_numbers import span_sequence_ids
from schemas import (
    DocumentDeleted,
    DocumentUpserted,
    Event,
    Position,
    ResourcesPublished,
    RewardAssigned,
    RolloutEnqueued,
    SpanRecorded,
    to_token,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool
    from pydantic import BaseModel

#: The CloudEvents source of every event the API publishes.
SOURCE = "/agl/api"
#: Models whose bodies are parsed by hand (one or many), for the OpenAPI document.
ONE_OR_MANY_MODELS: list[type[BaseModel]] = [RolloutIn, RewardIn, SpanIn]

router = APIRouter(prefix="/v1", tags=["commands"])


async def _publisher(request: Request) -> EventPublisher:
    publisher: EventPublisher = request.app.state.publisher
    return publisher


async def _relay(request: Request) -> OutboxRelay:
    relay: OutboxRelay = request.app.state.relay
    return relay


async def _pool(request: Request) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


async def _envelope(
    correlation_id: Annotated[str | None, Header(alias="X-Correlation-ID", max_length=200)] = None,
) -> dict[str, Any]:
    """Envelope fields of the request's events: where they come from and which request they belong to."""
    return {"source": SOURCE, "correlation_id": correlation_id}


PublisherDep = Annotated[EventPublisher, Depends(_publisher)]
PoolDep = Annotated["AsyncConnectionPool[Any]", Depends(_pool)]
RelayDep = Annotated[OutboxRelay, Depends(_relay)]
EnvelopeDep = Annotated[dict[str, Any], Depends(_envelope)]
IdPath = Annotated[str, Path(pattern=ID_PATTERN)]


def new_id(prefix: str) -> str:
    """A server-chosen id, as Agent Lightning users know them: ``ro-<hex>``, ``rs-<hex>``, ``doc-<hex>``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def _fields(request: BaseModel, *exclude: str) -> dict[str, Any]:
    # Attribute by attribute (not model_dump): nested models are handed over as they are, not re-parsed.
    return {name: getattr(request, name) for name in type(request).model_fields if name not in exclude}


def _accepted(events: Sequence[Event], positions: Sequence[Position]) -> dict[str, Any]:
    return {"event_ids": [e.event_id for e in events], "position": to_token(list(positions))}


# -- rollouts ---------------------------------------------------------------------------------------------------
@router.post(
    "/rollouts", status_code=202, response_model=RolloutsAccepted, openapi_extra=one_or_many_openapi(RolloutIn)
)
async def enqueue_rollouts(
    request: Request,
    *,
    publisher: PublisherDep,
    pool: PoolDep,
    envelope: EnvelopeDep,
    relay: RelayDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)] = None,
) -> RolloutsAccepted:
    """Enqueue one rollout (a JSON object) or many (an array).

    A retried request returns the same rollouts and publishes nothing new when it carries the same
    ``Idempotency-Key`` header or the same client-chosen ``rollout_id``s (remembered across API restarts).
    Reusing either for a different request answers 409.
    """
    items = await one_or_many(request, RolloutIn)
    _reject_repeated_ids(items)
    async with pool.connection() as conn:
        ids = [item.rollout_id or new_id("ro") for item in items]
        digest = request_hash(*items) if idempotency_key is not None else ""
        # The key's binding and the latest resources go out together and come back in one round trip (the
        # pipeline's end); a binding found in conflict is read again after it, outside.
        async with conn.pipeline():
            binding = None if idempotency_key is None else await send_key_binding(conn, idempotency_key, digest, ids)
            # None names the latest resources as of now, decided here and recorded in the event (not at run time).
            reading = await send_latest_read(conn) if any(i.resources_id is None for i in items) else None
        if idempotency_key is not None:
            ids = await ids_for_key(conn, idempotency_key, digest, ids, sent=binding)
        latest = None if reading is None else await latest_resources_id(conn, sent=reading)
        planned = [
            (
                RolloutEnqueued(
                    rollout_id=rollout_id,
                    **_fields(item, "rollout_id", "resources_id"),
                    resources_id=item.resources_id or latest,
                    **envelope,
                ),
                _digest(item),
            )
            for item, rollout_id in zip(items, ids, strict=True)
        ]
        # The router pins rollouts naming a task kind to an agent type; its decisions commit with the rollouts.
        planned, decisions = await routed(getattr(request.app.state, "router", None), conn, planned)
        fresh = await reserve_rollouts(conn, publisher, planned, decisions)
        # A retried request's rollouts (not fresh) are answered with what was stored the first time.
        retried = [i for i in ids if i not in fresh]
        stored = await stored_rollouts(conn, publisher, retried) if retried else {}
    event_of = {e.rollout_id: e for e, _ in planned if e.rollout_id in fresh}
    event_of.update((i, s.event) for i, s in stored.items())
    waiting = [fresh[i] if i in fresh else stored[i].outbox_id for i in ids if i in fresh or stored[i].position is None]
    published = iter(await wait_positions(relay, pool, [i for i in waiting if i is not None]))
    events = [event_of[rollout_id] for rollout_id in ids]
    positions: list[Position] = []
    for i in ids:
        known = None if i in fresh else stored[i].position
        positions.append(known if known is not None else next(published))
    rollouts = [
        RolloutAccepted(rollout_id=e.rollout_id, event_id=e.event_id, created=e.rollout_id in fresh) for e in events
    ]
    return RolloutsAccepted(rollouts=rollouts, **_accepted(events, positions))


def _digest(item: RolloutIn) -> str:
    # Without the id: a client resending a server-chosen id with the same content is the same request.
    return request_hash(item.model_copy(update={"rollout_id": None}))


def _reject_repeated_ids(items: Sequence[RolloutIn]) -> None:
    counts = Counter(item.rollout_id for item in items if item.rollout_id is not None)
    errors = [
        {"type": "value_error", "loc": ("body", i, "rollout_id"), "msg": "this rollout_id appears twice in the request"}
        for i, item in enumerate(items)
        if item.rollout_id is not None and counts[item.rollout_id] > 1
    ]
    if errors:
        raise RequestValidationError(errors)


@router.post("/rollouts/{rollout_id}/cancel", status_code=202, response_model=Accepted)
async def cancel_rollout(
    rollout_id: IdPath,
    *,
    publisher: PublisherDep,
    pool: PoolDep,
    relay: RelayDep,
    envelope: EnvelopeDep,
    body: Annotated[CancelIn | None, Body()] = None,
) -> Accepted:
    """Cancel a rollout (the body, with a ``reason``, is optional): decided at once, final.

    Its attempt at work ends ``cancelled`` and its runner is told at its next report. Cancelling a rollout that
    has already ended changes nothing and answers with no events. 404 for a rollout never enqueued.
    """
    reason = body.reason if body else None
    async with pool.connection() as conn:
        outbox_ids = await lifecycle_endings.cancel(conn, publisher, rollout_id, reason, envelope)
        ids = await event_ids(conn, outbox_ids)
    positions = await wait_positions(relay, pool, outbox_ids)
    return Accepted(event_ids=ids, position=to_token(list(positions)))


# -- resources and knowledge ------------------------------------------------------------------------------------
KeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="makes a retry answer the first request's events and publish nothing new",
    ),
]


@router.post("/resources", status_code=202, response_model=ResourcesAccepted)
async def publish_resources(
    body: ResourcesIn,
    *,
    publisher: PublisherDep,
    pool: PoolDep,
    relay: RelayDep,
    envelope: EnvelopeDep,
    idempotency_key: KeyHeader = None,
) -> ResourcesAccepted:
    """Publish a new version of a set of resources; versions count from 1 per ``resources_id``."""
    resources_id = body.resources_id or new_id("rs")

    async def build(conn: AsyncConnection[Any]) -> tuple[list[Event], dict[str, Any]]:
        # The counter row stays locked until the transaction commits the event to the outbox: versions are
        # committed, and so published, in order.
        version = await next_number(conn, "resources", resources_id)
        await record_latest(conn, resources_id, version)
        event = ResourcesPublished(
            resources_id=resources_id, resources_version=version, resources=body.resources, **envelope
        )
        return [event], {"resources_id": resources_id, "resources_version": version}

    done = await commit_once(
        pool, publisher, relay, route="resources", key=idempotency_key, digest=request_hash(body), build=build
    )
    return ResourcesAccepted(**done.answer, **_answer(done))


@router.post("/knowledge/documents", status_code=202, response_model=DocumentAccepted, tags=["knowledge"])
async def upsert_document(
    body: DocumentIn,
    *,
    publisher: PublisherDep,
    pool: PoolDep,
    relay: RelayDep,
    envelope: EnvelopeDep,
    idempotency_key: KeyHeader = None,
) -> DocumentAccepted:
    """Insert or replace a knowledge document; each upsert gets the next ``document_version``."""
    document_id = body.document_id or new_id("doc")

    async def build(conn: AsyncConnection[Any]) -> tuple[list[Event], dict[str, Any]]:
        version = await next_number(conn, "document", document_id)
        event = DocumentUpserted(
            document_id=document_id, document_version=version, **_fields(body, "document_id"), **envelope
        )
        return [event], {"document_id": document_id, "document_version": version}

    done = await commit_once(
        pool, publisher, relay, route="documents", key=idempotency_key, digest=request_hash(body), build=build
    )
    return DocumentAccepted(**done.answer, **_answer(done))


@router.delete(
    "/knowledge/documents/{document_id}", status_code=202, response_model=DocumentAccepted, tags=["knowledge"]
)
async def delete_document(
    document_id: IdPath,
    collection: Annotated[str, Query(pattern=ID_PATTERN)],
    *,
    publisher: PublisherDep,
    pool: PoolDep,
    relay: RelayDep,
    envelope: EnvelopeDep,
    idempotency_key: KeyHeader = None,
) -> DocumentAccepted:
    """Delete a knowledge document from its collection."""

    async def build(_: AsyncConnection[Any]) -> tuple[list[Event], dict[str, Any]]:
        return [DocumentDeleted(collection=collection, document_id=document_id, **envelope)], {}

    digest = request_hash(CancelIn(reason=f"{collection}/{document_id}"))
    done = await commit_once(
        pool, publisher, relay, route="document-deletes", key=idempotency_key, digest=digest, build=build
    )
    return DocumentAccepted(document_id=document_id, **_answer(done))


# -- rewards and spans ------------------------------------------------------------------------------------------
@router.post("/rewards", status_code=202, response_model=Accepted, openapi_extra=one_or_many_openapi(RewardIn))
async def assign_rewards(
    request: Request,
    *,
    publisher: PublisherDep,
    pool: PoolDep,
    relay: RelayDep,
    envelope: EnvelopeDep,
    idempotency_key: KeyHeader = None,
) -> Accepted:
    """Assign one reward (a JSON object) or many (an array)."""
    items = await one_or_many(request, RewardIn)

    async def build(_: AsyncConnection[Any]) -> tuple[list[Event], dict[str, Any]]:
        return [RewardAssigned(**_fields(item), **envelope) for item in items], {}

    done = await commit_once(
        pool, publisher, relay, route="rewards", key=idempotency_key, digest=request_hash(*items), build=build
    )
    return Accepted(**_answer(done))


@router.post("/spans", status_code=202, response_model=SpansAccepted, openapi_extra=one_or_many_openapi(SpanIn))
async def record_spans(
    request: Request,
    *,
    publisher: PublisherDep,
    pool: PoolDep,
    relay: RelayDep,
    envelope: EnvelopeDep,
    idempotency_key: KeyHeader = None,
) -> SpansAccepted:
    """Record a batch of spans (an array, or one object). Spans without ``sequence_id`` are numbered per rollout."""
    items = await one_or_many(request, SpanIn)

    async def build(conn: AsyncConnection[Any]) -> tuple[list[Event], dict[str, Any]]:
        sequence_ids = await span_sequence_ids(conn, items)
        events: list[Event] = [
            SpanRecorded(sequence_id=seq, **_fields(item, "sequence_id"), **envelope)
            for item, seq in zip(items, sequence_ids, strict=True)
        ]
        return events, {"sequence_ids": sequence_ids}

    done = await commit_once(
        pool, publisher, relay, route="spans", key=idempotency_key, digest=request_hash(*items), build=build
    )
    return SpansAccepted(**done.answer, **_answer(done))


def _answer(done: Committed) -> dict[str, Any]:
    return {"event_ids": done.event_ids, "position": to_token(done.positions)}
