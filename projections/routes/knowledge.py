"""``GET /v1/knowledge/search`` and ``/v1/knowledge/documents[/{id}]``: the knowledge read model.

The query is embedded here, by an embedder of the model the active generation was built with (vectors of two
models are never compared), created on first use and kept for the process: the configured one (``AGL_EMBEDDER``),
or, while a model change is being rebuilt, the previous model, so the old index keeps serving until the switch.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from knowledge.consolidation import ConsolidationPolicy, consolidate
from knowledge.embedders import Embedder, embedder_for_model
from projections.errors import ProjectionNotReady
from projections.knowledge import (
    PROJECTION,
    DocumentRow,
    fuse,
    get_document,
    index_model,
    list_documents,
    text_search,
    vector_search,
)
from projections.knowledge_memory import PROJECTION as MEMORIES
from projections.knowledge_memory import memories_of
from projections.reading import READ_RESPONSES, not_found, reading
from projections.routes.waiting import AfterQuery, WaitQuery, wait_after
from schemas.bounds import MAX_ID_LENGTH

router = APIRouter(prefix="/v1/knowledge", tags=["knowledge"], responses=READ_RESPONSES)
SearchMode = Literal["hybrid", "vector", "text"]
_embedder_lock = asyncio.Lock()


class SearchHit(BaseModel):
    collection: str
    document_id: str
    document_version: int
    chunk_index: int
    heading: str
    text: str
    metadata: dict[str, Any]
    score: float
    vector_rank: int | None = None
    text_rank: int | None = None


class SearchAnswer(BaseModel):
    query: str
    collection: str
    mode: SearchMode
    model_id: str | None
    hits: list[SearchHit]


class DocumentOut(BaseModel):
    collection: str
    document_id: str
    latest_version: int
    indexed_version: int | None
    metadata: dict[str, Any]
    chunk_count: int
    model_id: str | None
    updated_at: datetime
    text: str


class DocumentsPage(BaseModel):
    items: list[DocumentOut]
    total: int
    limit: int
    offset: int


async def query_embedder(request: Request, model_id: str) -> Embedder:
    """An embedder for the index's model, built on first use and kept (a process that never searches loads none)."""
    state = request.app.state
    async with _embedder_lock:
        cache: dict[str, Embedder | None] = getattr(state, "knowledge_embedders", None) or {}
        state.knowledge_embedders = cache
        if model_id not in cache:
            cache[model_id] = await asyncio.to_thread(embedder_for_model, model_id, state.settings)
    embedder = cache[model_id]
    if embedder is None:
        raise ProjectionNotReady(
            f"the knowledge index holds vectors of {model_id}, which this API cannot embed queries for "
            f"(AGL_EMBEDDER={state.settings.embedder}): a model change is being rebuilt; retry later or use mode=text"
        )
    return embedder


def _invalid_filter(kind: str, msg: str) -> RequestValidationError:
    # Answered like any invalid query parameter (422, InvalidAnswer), not with a bare string detail.
    return RequestValidationError([{"type": kind, "loc": ("query", "filter"), "msg": msg}])


def _parse_filter(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise _invalid_filter("json_invalid", f"not JSON ({e})") from None
    if not isinstance(value, dict):
        raise _invalid_filter("dict_type", "must be a JSON object, matched against each document's metadata")
    return value


@router.get("/search", response_model=SearchAnswer)
async def search_route(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=4000, description="the query text")],
    collection: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)],
    *,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    filter: Annotated[
        str | None, Query(max_length=4000, description='JSON object the metadata must contain: {"lang": "en"}')
    ] = None,
    mode: SearchMode = "hybrid",
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> SearchAnswer:
    """Chunks of ``collection`` best matching ``q``: by vector, by full text, or both fused by reciprocal rank."""
    filter_ = _parse_filter(filter)
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        indexed_by, _ = await index_model(conn)
    query_vector = None
    model_id = None
    if mode != "text":
        # Embedded outside any transaction: no database connection is held while the model runs.
        embedder = await query_embedder(request, indexed_by)
        query_vector = await embedder.embed_query(q)
        model_id = embedder.model_id
    # Twice as many candidates from each side as asked: fusion reorders them.
    depth = k if mode != "hybrid" else 2 * k
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        if model_id is not None and (await index_model(conn))[0] != model_id:
            raise ProjectionNotReady("the knowledge index switched models during this search; retry")
        vector_hits = (
            await vector_search(conn, query_vector, collection=collection, k=depth, filter_=filter_)
            if query_vector is not None
            else []
        )
        text_hits = (
            await text_search(conn, q, collection=collection, k=depth, filter_=filter_) if mode != "vector" else []
        )
    if mode == "hybrid":
        hits = fuse(vector_hits, text_hits, k)
    else:
        hits = vector_hits if mode == "vector" else text_hits
        for rank, hit in enumerate(hits, start=1):
            setattr(hit, "vector_rank" if mode == "vector" else "text_rank", rank)
    return SearchAnswer(
        query=q,
        collection=collection,
        mode=mode,
        model_id=model_id,
        hits=[SearchHit.model_validate(vars(h)) for h in hits],
    )


def _out(row: DocumentRow) -> DocumentOut:
    return DocumentOut.model_validate(vars(row))


@router.get("/documents", response_model=DocumentsPage)
async def list_route(
    request: Request,
    *,
    collection: Annotated[str | None, Query(min_length=1, max_length=MAX_ID_LENGTH)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> DocumentsPage:
    """Documents (not deleted), by collection then id, with the version indexed so far."""
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        rows, total = await list_documents(conn, collection=collection, limit=limit, offset=offset)
    return DocumentsPage(items=[_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/documents/{document_id}", response_model=DocumentOut, responses=not_found("document"))
async def get_route(
    request: Request,
    document_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    *,
    collection: Annotated[str | None, Query(min_length=1, max_length=MAX_ID_LENGTH)] = None,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> DocumentOut:
    """One document: its text, metadata, newest version and indexed version."""
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        row = await get_document(conn, document_id, collection)
    if row is None:
        raise HTTPException(404, f"no document {document_id!r}")
    return _out(row)


class ConsolidatedOut(BaseModel):
    memory_id: str
    text: str
    kind: str
    score: float
    memory_ids: list[str]
    rollout_ids: list[str]
    mean_reward: float | None
    first_at: datetime
    last_at: datetime


memory_router = APIRouter(prefix="/v1/memory", tags=["memory"], responses=READ_RESPONSES)


@memory_router.get("/{agent_id}", response_model=list[ConsolidatedOut])
async def consolidated_route(
    request: Request,
    agent_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    *,
    scope: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)] = "default",
    merge_threshold: Annotated[float, Query(ge=0, le=1)] = 0.9,
    half_life_days: Annotated[float, Query(gt=0, le=100_000)] = 30.0,
    reward_weight: Annotated[float, Query(ge=0, le=1000)] = 1.0,
    min_score: Annotated[float, Query(ge=0, le=1e9)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> list[ConsolidatedOut]:
    """The agent's memories consolidated: near-duplicates merged with their provenance, best score first."""
    await wait_after(request, MEMORIES, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, MEMORIES):
        items, rewards = await memories_of(conn, f"memory.{agent_id}.{scope}")
    policy = ConsolidationPolicy(merge_threshold, half_life_days, reward_weight, min_score)
    merged = consolidate(items, rewards, policy, datetime.now(UTC))[:limit]
    return [
        ConsolidatedOut(
            memory_id=c.memory_id,
            text=c.text,
            kind=c.kind,
            score=c.score,
            memory_ids=c.memory_ids,
            rollout_ids=c.rollout_ids,
            mean_reward=c.mean_reward,
            first_at=c.first_at,
            last_at=c.last_at,
        )
        for c in merged
    ]
