"""v0.3 span routes. The stock client sends one ``/spans/next`` and one ``/spans`` per span, so both are one short
PostgreSQL transaction and no Kafka round trip: a sequence id comes from the per-rollout counter our own
``POST /v1/spans`` and the OTLP receiver use, and a span is committed to the outbox (as a ``span.recorded`` event)
and answered at once, as the lifecycle's reports are; the relay publishes it right after.

Searches read the spans read model (:mod:`projections.spans`).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request

from producers import requests
from producers.agl_compat import paging, write_model
from producers.agl_compat.convert import span_in, span_out
from producers.agl_compat.deps import RESPONSES, Services, as_422, json_object, services
from producers.agl_compat.models import NextSequenceIdRequest, NextSequenceIdResponse, Page, Span
from producers.errors import IdempotencyConflict
from producers.idempotency import next_number, request_hash
from projections import spans as spans_model
from projections.reading import reading
from schemas import Event, SpanRecorded

router = APIRouter(prefix="/v1/agl", tags=["agent-lightning v0.3"], responses=RESPONSES)
ServicesDep = Annotated[Services, Depends(services)]
#: The counter of span sequence ids per rollout, shared with ``POST /v1/spans`` and ``POST /v1/traces``.
SEQUENCE_COUNTER = "span_sequence"
#: A search reads at most this many spans of one rollout.
MAX_SPANS = 100_000
_MATCHED = ("trace_id", "span_id", "parent_id", "name")


@router.post("/spans/next", response_model=NextSequenceIdResponse)
async def next_sequence_id(body: NextSequenceIdRequest, svc: ServicesDep) -> NextSequenceIdResponse:
    """The rollout's next span sequence id (one counter per rollout: ids are unique and increasing in it)."""
    # One statement, atomic on its own (the pool's connections autocommit): no BEGIN and COMMIT round trips.
    async with svc.pool.connection() as conn:
        return NextSequenceIdResponse(sequence_id=await next_number(conn, SEQUENCE_COUNTER, body.rollout_id))


@router.post("/spans", status_code=201, response_model=Span | None)
async def add_span(span: Span, svc: ServicesDep) -> Span | None:
    """Record a span; a span already recorded (same rollout, attempt and span id) is ignored: ``null``, as theirs."""
    with as_422():
        request = span_in(span)
    fresh = False

    async def build(_: Any) -> tuple[list[Event], dict[str, Any]]:
        nonlocal fresh
        fresh = True
        fields = {k: getattr(request, k) for k in type(request).model_fields}
        return [SpanRecorded(**fields, **svc.envelope)], {}

    # The span's ids are its Idempotency-Key: a resent span finds its first request and publishes nothing.
    key = f"{span.rollout_id}/{span.attempt_id}/{span.span_id}"
    try:
        async with svc.pool.connection() as conn:
            await requests._commit(  # commit_once without its wait for the publish
                conn, svc.publisher, route="agl-spans", key=key, digest=request_hash(request), build=build
            )
    except IdempotencyConflict:  # the same ids with other content: theirs keeps the first copy too
        return None
    if not fresh:
        return None
    svc.relay.kick()
    return span


async def _search(svc: Services, body: dict[str, Any]) -> Page:
    limit, offset, sort_by, order = paging.validate({"sort_by": "sequence_id", **body}, Span)
    rollout_id = body.get("rollout_id")
    if not isinstance(rollout_id, str):
        return Page(items=[], limit=limit, offset=offset, total=0)
    attempt_id = body.get("attempt_id")
    async with svc.pool.connection() as conn:
        if attempt_id == "latest":
            latest = await write_model.attempt(conn, rollout_id, "latest")
            if latest is None:
                return Page(items=[], limit=limit, offset=offset, total=0)
            attempt_id = latest.attempt_id
        async with reading(conn, spans_model.PROJECTION):
            rows, _ = await spans_model.list_spans(
                conn, rollout_id, spans_model.SpanFilter(attempt_id=attempt_id), after=None, limit=MAX_SPANS
            )
    found = [span_out(_row(r)) for r in rows]
    logic = body.get("filter_logic", "and")
    kept = []
    for s in found:
        tests: dict[str, bool] = {}
        for field in _MATCHED:
            value = getattr(s, field)
            if body.get(field) is not None:
                tests[field] = value == body[field]
            if body.get(f"{field}_contains") is not None:
                tests[f"{field}_contains"] = value is not None and str(body[f"{field}_contains"]) in value
        if paging.matches(tests, logic):
            kept.append(s)
    return paging.page(kept, limit, offset, sort_by, order)


def _row(row: spans_model.SpanRow) -> dict[str, Any]:
    data = row._asdict()
    for column in ("attributes", "events", "links", "resource"):
        data[column] = orjson.loads(data[column])
    return data


@router.post("/spans/search", response_model=Page)
async def search_spans(request: Request, svc: ServicesDep) -> Page:
    return await _search(svc, await json_object(request))


@router.get("/spans", response_model=Page)
async def query_spans(request: Request, svc: ServicesDep) -> Page:
    body: dict[str, Any] = dict(request.query_params)
    for key in ("limit", "offset"):
        if key in body:
            body[key] = int(body[key]) if body[key].lstrip("-").isdigit() else body[key]
    return await _search(svc, body)
