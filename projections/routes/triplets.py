"""Triplet routes: ``GET /v1/triplets`` (keyset pages), ``GET /v1/triplets/export`` (a streamed JSONL or Parquet
download), ``GET /v1/rollouts/{id}/triplets`` and ``GET /v1/rollouts/{id}/messages`` (trace to OpenAI messages).

Every route reads the built-in ``triplets`` projection unless ``?projection=`` names another triplet projection
(one built with another adapter configuration, see ``projections.triplets.triplet_projection``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import fields
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, Field

from producers.http import ErrorAnswer
from projections.base import Projection
from projections.errors import ProjectionNotReady
from projections.reading import READ_RESPONSES, reading
from projections.routes.waiting import AfterQuery, WaitQuery, wait_after
from projections.tracking import active_generation
from projections.triplet_adapter import AdapterConfig, to_messages
from projections.triplets import PROJECTION, resolve
from projections.triplets_export import MEDIA_TYPES, ExportFormat, encode_pages
from projections.triplets_queries import TripletFilter, list_triplets, rollout_spans, stream_triplets
from schemas import RolloutMode, SpanRecorded
from schemas.bounds import ID_PATTERN, Id

router = APIRouter(tags=["triplets"], responses=READ_RESPONSES)


class TripletOut(BaseModel):
    """One LLM call of an attempt as a training triplet; ``(rollout_id, attempt_id, index)`` is its identity."""

    rollout_id: str
    attempt_id: str
    index: int = Field(description="0-based order of the call within its attempt")
    span_id: str
    response_id: str | None
    agent_name: str | None
    model: str | None
    mode: str | None
    resources_id: str | None
    start_time: datetime
    end_time: datetime | None
    reward: float | None
    reward_source: Literal["link", "positional", "final"] | None
    reward_error: str | None
    reward_dimensions: dict[str, float]
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    logprobs: list[dict[str, Any]] | None
    prompt: Any
    response: Any
    request: dict[str, Any]
    response_meta: dict[str, Any]
    image_urls: list[str]


class TripletPage(BaseModel):
    items: list[TripletOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class MessagesOut(BaseModel):
    rollout_id: str
    items: list[dict[str, Any]] = Field(description="per LLM call: attempt_id, messages, tools, span_id")


ProjectionQuery = Annotated[
    str, Query(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="a triplet projection other than the built-in one")
]


def triplet_filter(
    *,
    rollout_id: Id | None = None,
    attempt_id: Id | None = None,
    mode: RolloutMode | None = None,
    resources_id: Id | None = None,
    reward_min: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    reward_max: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    has_reward: bool | None = None,
    since: Annotated[AwareDatetime | None, Query(description="calls started at or after (inclusive)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="calls started before (exclusive)")] = None,
) -> TripletFilter:
    return TripletFilter(rollout_id, attempt_id, mode, resources_id, reward_min, reward_max, has_reward, since, until)


FilterDep = Annotated[TripletFilter, Depends(triplet_filter)]
LimitQuery = Annotated[int, Query(ge=1, le=1000)]
CursorQuery = Annotated[str | None, Query(max_length=2000, description="the next_cursor of the previous page")]


async def _page(
    request: Request, projection: Projection, where: TripletFilter, limit: int, cursor: str | None
) -> Response:
    async with request.app.state.pool.connection() as conn, reading(conn, projection):
        items, next_cursor = await list_triplets(conn, where, limit=limit, cursor=cursor)
    # The rows are JSON-able already: serialising them once with orjson is what the exports do too.
    return Response(orjson.dumps({"items": items, "next_cursor": next_cursor}), media_type="application/json")


@router.get("/v1/triplets", response_model=TripletPage)
async def list_route(
    request: Request,
    where: FilterDep,
    *,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
    projection: ProjectionQuery = PROJECTION.name,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> Response:
    """Triplets matching every filter, by the call's start time (then rollout, attempt, index), a page at a time."""
    chosen = resolve(projection)
    await wait_after(request, chosen, after, wait_ms)
    return await _page(request, chosen, where, limit, cursor)


@router.get(
    "/v1/triplets/export",
    response_class=StreamingResponse,
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "every match, streamed"}},
)
async def export_route(
    request: Request,
    where: FilterDep,
    *,
    format: ExportFormat = "jsonl",
    projection: ProjectionQuery = PROJECTION.name,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> StreamingResponse:
    """Every matching triplet as JSON Lines or Parquet, streamed from a server-side cursor (constant memory)."""
    chosen = resolve(projection)
    await wait_after(request, chosen, after, wait_ms)
    pool = request.app.state.pool
    async with pool.connection() as conn:  # refused now (503), rather than as a broken stream later
        if await active_generation(conn, chosen.name) is None:
            raise ProjectionNotReady(f"projection {chosen.name} has not started yet (`agl projections run`)")

    async def body() -> AsyncIterator[bytes]:
        async with pool.connection() as conn, reading(conn, chosen):
            async for chunk, _ in encode_pages(stream_triplets(conn, where), format):
                if chunk:
                    yield chunk

    filename = f"triplets.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(body(), media_type=MEDIA_TYPES[format], headers=headers)


@router.get("/v1/rollouts/{rollout_id}/triplets", response_model=TripletPage)
async def rollout_route(
    request: Request,
    rollout_id: Annotated[str, Path(pattern=ID_PATTERN)],
    *,
    attempt_id: Id | None = None,
    limit: LimitQuery = 1000,
    cursor: CursorQuery = None,
    projection: ProjectionQuery = PROJECTION.name,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> Response:
    """A rollout's triplets (an empty page when it has none), optionally of one attempt."""
    chosen = resolve(projection)
    await wait_after(request, chosen, after, wait_ms)
    return await _page(request, chosen, TripletFilter(rollout_id=rollout_id, attempt_id=attempt_id), limit, cursor)


@router.get(
    "/v1/rollouts/{rollout_id}/messages",
    response_model=MessagesOut,
    responses={404: {"model": ErrorAnswer, "description": "no span of this rollout is known"}},
)
async def messages_route(
    request: Request,
    rollout_id: Annotated[str, Path(pattern=ID_PATTERN)],
    *,
    attempt_id: Id | None = None,
    projection: ProjectionQuery = PROJECTION.name,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> MessagesOut:
    """Per LLM call, the OpenAI chat payload (prompt messages, then the reply), for prompt optimisation.

    The projection's own adapter configuration decides which spans are LLM calls.
    """
    chosen = resolve(projection)
    await wait_after(request, chosen, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, chosen):
        spans = await rollout_spans(conn, rollout_id)
        cur = await conn.execute("SELECT config FROM triplet_config")
        found = await cur.fetchone()
    if not spans:
        raise HTTPException(404, f"no span of rollout {rollout_id!r} is known")
    # The configuration that built these rows (keys this code does not know are left out).
    known = {f.name for f in fields(AdapterConfig)}
    config = AdapterConfig(**{k: v for k, v in found[0].items() if k in known}) if found else AdapterConfig()
    items: list[dict[str, Any]] = []
    for attempt, bodies in sorted(spans.items()):
        if attempt_id is None or attempt == attempt_id:
            decoded = [SpanRecorded.model_validate_json(b) for b in bodies]
            items.extend({"attempt_id": attempt, **payload} for payload in to_messages(decoded, config))
    return MessagesOut(rollout_id=rollout_id, items=items)
