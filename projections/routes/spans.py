"""``GET /v1/rollouts/{rollout_id}/spans`` and ``/trace``: the spans read model, as a list and as a tree.

**Filters** (both routes; combined with AND): ``attempt_id=``, ``name=`` (exact, repeatable: any of),
``name_prefix=``, and ``attr.<key>=<value>`` (attribute equality, repeatable; several values of one key match any
of them). The whole query name after ``attr.`` is the attribute key, dots included: ``attr.gen_ai.request.model=
gpt-4o``. A value matches the attribute as a string, or as the JSON scalar it spells (``attr.n=1`` matches ``1`` and
``"1"``; ``attr.n="1"`` only the string; ``true``, ``null`` and numbers likewise). A malformed filter (an empty
key, ``attr`` without a key, too long or too many) is a 422 naming the parameter.

**Unknown rollouts.** The spans read model knows spans only: it cannot tell a rollout that does not exist from one
whose spans have not arrived, so both answer an empty page (``GET /v1/rollouts/{id}`` tells them apart).

**The list** is ordered attempt by attempt (see :mod:`projections.spans`), then by ``(sequence_id, start_time,
span_id)``. Pages are keyset pages: ``next_cursor`` (opaque; absent on the last page) continues after the page's
last span, so spans arriving between pages never shift or repeat a page. Pass the same filters with the cursor.

**The trace** is one tree per attempt, children in the list's order:

- ``roots``: spans without a parent;
- ``orphans``: spans whose parent is not among the attempt's spans (not recorded, or not yet), each with its
  subtree; a cycle of parents is entered at its first span in order, which is listed here;
- ``continued``: subtrees cut from a branch deeper than ``MAX_DEPTH`` spans, each node still naming its
  ``parent_id`` (JSON encoders refuse deeper nesting).

With a name or attribute filter the tree is **pruned**: it keeps the matching spans and their ancestors, and each
node says whether it matched (``matched``; always true without a filter). A trace holds at most ``max_spans``
spans, in the list's order; ``truncated`` says whether more exist (the children of spans left out then show up
among the orphans).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field, StringConstraints

from projections.reading import READ_RESPONSES, reading
from projections.routes.waiting import AfterQuery, WaitQuery, wait_after
from projections.spans import (
    PROJECTION,
    CursorMismatch,
    SpanFilter,
    SpanKey,
    SpanRow,
    attribute_values,
    list_spans,
    trace_spans,
)
from schemas.bounds import BIGINT_MAX, ID_PATTERN, Id

router = APIRouter(prefix="/v1/rollouts", tags=["spans"], responses=READ_RESPONSES)

#: A branch deeper than this many spans continues in the attempt's ``continued`` list.
MAX_DEPTH = 60
MAX_NAME_LENGTH = 1_000
MAX_ATTRIBUTE_KEYS = 16
MAX_ATTRIBUTE_VALUES = 64
MAX_ATTRIBUTE_KEY_LENGTH = 256
MAX_ATTRIBUTE_VALUE_LENGTH = 4_096
MAX_CURSOR_LENGTH = 1_000
MAX_TRACE_SPANS = 50_000
_ATTR = "attr."
_SPAN_ID_LENGTH = 16


# -- answers (documentation: the routes write their JSON directly, the span's JSON columns passed through) --------
class SpanStatusOut(BaseModel):
    status_code: str
    description: str | None


class SpanOut(BaseModel):
    rollout_id: str
    attempt_id: str
    sequence_id: int
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start_time: datetime
    end_time: datetime | None
    status: SpanStatusOut
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]
    resource: dict[str, Any]


class SpanPage(BaseModel):
    items: list[SpanOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class TraceNode(SpanOut):
    matched: bool = Field(description="whether the span matches the filters (true without filters)")
    children: list[TraceNode]


class TraceAttempt(BaseModel):
    attempt_id: str
    span_count: int = Field(description="spans the attempt has, whatever the filters")
    roots: list[TraceNode]
    orphans: list[TraceNode] = Field(description="spans whose parent is missing, with their subtrees")
    continued: list[TraceNode] = Field(description=f"subtrees of branches deeper than {MAX_DEPTH} spans")


class TraceOut(BaseModel):
    rollout_id: str
    truncated: bool = Field(description="the trace has more than max_spans spans; the first ones are shown")
    attempts: list[TraceAttempt]


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")


# -- query parameters -------------------------------------------------------------------------------------------
def _invalid(loc: str, msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("query", loc), "msg": msg}])


def _attribute_filters(request: Request) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The ``attr.<key>=<value>`` parameters, validated (a 422 naming the parameter otherwise)."""
    found: dict[str, list[str]] = {}
    count = 0
    for name, value in request.query_params.multi_items():
        if name == "attr":
            raise _invalid(name, "an attribute filter is attr.<key>=<value>, e.g. attr.gen_ai.request.model=gpt-4o")
        if not name.startswith(_ATTR):
            continue
        key = name[len(_ATTR) :]
        if not key:
            raise _invalid(name, "the attribute key after 'attr.' is empty")
        if len(key) > MAX_ATTRIBUTE_KEY_LENGTH:
            raise _invalid(name, f"an attribute key has at most {MAX_ATTRIBUTE_KEY_LENGTH} characters")
        if len(value) > MAX_ATTRIBUTE_VALUE_LENGTH:
            raise _invalid(name, f"an attribute value has at most {MAX_ATTRIBUTE_VALUE_LENGTH} characters")
        if "\x00" in key or "\x00" in value:  # the input guard refuses these first; kept for apps without it
            raise _invalid(name, "NUL (\\u0000) is not allowed in a filter")
        found.setdefault(key, []).extend(attribute_values(value))
        count += 1
        if len(found) > MAX_ATTRIBUTE_KEYS or count > MAX_ATTRIBUTE_VALUES:
            raise _invalid(name, f"at most {MAX_ATTRIBUTE_KEYS} attribute keys and {MAX_ATTRIBUTE_VALUES} values")
    return tuple((key, tuple(dict.fromkeys(values))) for key, values in sorted(found.items()))


def encode_cursor(key: SpanKey) -> str:
    raw = orjson.dumps([key.attempt_id, key.sequence_id, key.start_time.isoformat(), key.span_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> SpanKey:
    """The key a cursor continues after; a 422 for anything this route did not write."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        attempt_id, sequence_id, start, span_id = orjson.loads(raw)
        start_time = datetime.fromisoformat(start)
        valid = (
            isinstance(attempt_id, str)
            and 0 < len(attempt_id) <= MAX_CURSOR_LENGTH
            and "\x00" not in attempt_id
            and type(sequence_id) is int
            and 0 <= sequence_id <= BIGINT_MAX
            and start_time.tzinfo is not None
            and isinstance(span_id, str)
            and len(span_id) == _SPAN_ID_LENGTH
            and span_id.isascii()
            and span_id.isalnum()
        )
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        valid = False
    if not valid:
        raise _invalid("cursor", "not a cursor of this route (pass next_cursor as it was answered)")
    return SpanKey(attempt_id, sequence_id, start_time, span_id)


NameQuery = Annotated[
    list[Annotated[str, StringConstraints(max_length=MAX_NAME_LENGTH)]],
    Query(max_length=100, description="exact span names (repeatable: any of)"),
]
PrefixQuery = Annotated[str | None, Query(max_length=MAX_NAME_LENGTH, description="span names starting with this")]
AttemptQuery = Annotated[Id | None, Query(description="only this attempt's spans")]
RolloutPath = Annotated[str, Path(pattern=ID_PATTERN)]


def _filter(request: Request, attempt_id: str | None, name: list[str], name_prefix: str | None) -> SpanFilter:
    return SpanFilter(attempt_id, tuple(dict.fromkeys(name)), name_prefix, _attribute_filters(request))


# -- the list ---------------------------------------------------------------------------------------------------
@router.get("/{rollout_id}/spans", response_model=SpanPage)
async def spans_route(
    request: Request,
    rollout_id: RolloutPath,
    *,
    attempt_id: AttemptQuery = None,
    name: NameQuery = [],  # noqa: B006 - FastAPI copies query defaults
    name_prefix: PrefixQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> Response:
    """A rollout's spans, attempt by attempt, in sequence order, a keyset page at a time (``next_cursor``).

    Filters: ``attempt_id``, ``name`` (repeatable), ``name_prefix``, and ``attr.<key>=<value>`` (repeatable;
    ``attr.gen_ai.request.model=gpt-4o``): the value matches the attribute as a string or as the JSON scalar it
    spells (``attr.n=1`` matches 1 and "1"). A rollout without spans answers an empty page.
    """
    spans_filter = _filter(request, attempt_id, name, name_prefix)
    key = None if cursor is None else decode_cursor(cursor)
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        try:
            rows, more = await list_spans(conn, rollout_id, spans_filter, after=key, limit=limit)
        except CursorMismatch as e:
            raise _invalid("cursor", str(e)) from e
    next_cursor = encode_cursor(rows[-1].key) if more else None
    return _json({"items": [r.as_json() for r in rows], "next_cursor": next_cursor})


# -- the trace --------------------------------------------------------------------------------------------------
def build_tree(rows: list[SpanRow], *, prune: bool) -> dict[str, list[dict[str, Any]]]:
    """One attempt's spans (in order) as ``roots``, ``orphans`` and ``continued`` trees (see the module docstring)."""
    by_id = {r.span_id: r for r in rows}
    children: dict[str, list[str]] = {}
    tops: list[tuple[str, str]] = []
    for r in rows:
        if r.parent_id is None:
            tops.append((r.span_id, "roots"))
        elif r.parent_id in by_id and r.parent_id != r.span_id:
            children.setdefault(r.parent_id, []).append(r.span_id)
        else:
            tops.append((r.span_id, "orphans"))
    reached: set[str] = set()
    post_order: list[str] = []

    def walk(top: str) -> None:
        stack = [(top, False)]
        while stack:
            span_id, done = stack.pop()
            if done:
                post_order.append(span_id)
            elif span_id not in reached:
                reached.add(span_id)
                stack.append((span_id, True))
                stack.extend((c, False) for c in reversed(children.get(span_id, ())))

    for top, _ in tops:
        walk(top)
    for r in rows:  # what no top reaches sits on a cycle of parents
        if r.span_id not in reached:
            tops.append((r.span_id, "orphans"))
            walk(r.span_id)
    place = {r.span_id: i for i, r in enumerate(rows)}
    tops.sort(key=lambda top: place[top[0]])  # cycles were entered last: each list in the spans' order
    kept = set(by_id)
    if prune:
        kept = set()
        for span_id in post_order:  # children before their parents
            if by_id[span_id].matched or any(c in kept for c in children.get(span_id, ())):
                kept.add(span_id)
    tree: dict[str, list[dict[str, Any]]] = {"roots": [], "orphans": [], "continued": []}
    pending = [(span_id, 0, tree[kind]) for span_id, kind in reversed(tops) if span_id in kept]
    placed: set[str] = set()
    while pending:
        span_id, depth, into = pending.pop()
        if span_id in placed:  # a cycle's way back to where it was entered
            continue
        placed.add(span_id)
        row = by_id[span_id]
        node = {**row.as_json(), "matched": row.matched, "children": []}
        into.append(node)
        deeper = (depth + 1, node["children"]) if depth + 1 < MAX_DEPTH else (0, tree["continued"])
        pending.extend((c, *deeper) for c in reversed(children.get(span_id, ())) if c in kept)
    return tree


@router.get("/{rollout_id}/trace", response_model=TraceOut)
async def trace_route(
    request: Request,
    rollout_id: RolloutPath,
    *,
    attempt_id: AttemptQuery = None,
    name: NameQuery = [],  # noqa: B006 - FastAPI copies query defaults
    name_prefix: PrefixQuery = None,
    max_spans: Annotated[int, Query(ge=1, le=MAX_TRACE_SPANS)] = 10_000,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> Response:
    """Each attempt's spans as a tree: ``roots``, ``orphans`` (missing parent) and ``continued`` (cut at depth).

    The filters are the span list's (``attr.<key>=<value>`` included); a name or attribute filter prunes the tree
    to the matching spans and their ancestors, each node saying whether it ``matched``. At most ``max_spans``
    spans, in the list's order (``truncated`` says whether more exist).
    """
    spans_filter = _filter(request, attempt_id, name, name_prefix)
    await wait_after(request, PROJECTION, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, PROJECTION):
        attempts, rows, truncated = await trace_spans(conn, rollout_id, spans_filter, limit=max_spans)
    by_attempt: dict[str, list[SpanRow]] = {a.attempt_id: [] for a in attempts}
    for row in rows:
        by_attempt[row.attempt_id].append(row)
    out = [
        {"attempt_id": a.attempt_id, "span_count": a.span_count}
        | build_tree(by_attempt[a.attempt_id], prune=spans_filter.narrows)
        for a in attempts
    ]
    return _json({"rollout_id": rollout_id, "truncated": truncated, "attempts": out})
