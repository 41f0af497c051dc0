"""``POST /v1/rollouts/{rollout_id}/attempts/{attempt_id}/context``: record what an attempt's agent was given.

Committed through the outbox like every command, as ``attempt.context_retrieved`` on the attempt's topic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from producers.commands import EnvelopeDep, IdPath, KeyHeader, PoolDep, PublisherDep, RelayDep
from producers.idempotency import request_hash
from producers.models import Accepted
from producers.requests import commit_once
from schemas import ContextRetrieved, to_token
from schemas.knowledge import RetrievedHit

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from schemas import Event

router = APIRouter(prefix="/v1/rollouts", tags=["knowledge"])


class ContextIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    collection: str = Field(min_length=1, max_length=200)
    query: str = Field(max_length=100_000)
    mode: Literal["hybrid", "vector", "text"] = "hybrid"
    k: int = Field(ge=1, le=1000)
    model_id: str | None = None
    hits: list[RetrievedHit] = Field(default_factory=list, max_length=1000)


@router.post("/{rollout_id}/attempts/{attempt_id}/context", status_code=202, response_model=Accepted)
async def record_context(
    rollout_id: IdPath,
    attempt_id: IdPath,
    body: ContextIn,
    *,
    publisher: PublisherDep,
    pool: PoolDep,
    relay: RelayDep,
    envelope: EnvelopeDep,
    idempotency_key: KeyHeader = None,
) -> Accepted:
    """Record the knowledge retrieved for an attempt before its agent started (ids, versions, chunks, scores)."""

    async def build(_: AsyncConnection[Any]) -> tuple[list[Event], dict[str, Any]]:
        fields = body.model_dump()
        fields["hits"] = tuple(body.hits)
        return [ContextRetrieved(rollout_id=rollout_id, attempt_id=attempt_id, **fields, **envelope)], {}

    done = await commit_once(
        pool, publisher, relay, route="context", key=idempotency_key, digest=request_hash(body), build=build
    )
    return Accepted(event_ids=done.event_ids, position=to_token(done.positions))
