"""The spans read model: every recorded span of every attempt, for the span list and trace tree routes.

Each ``span.recorded`` is stored once per ``(rollout_id, attempt_id, span_id)``: the first copy on the log wins and
a later copy (an exporter's retry, a re-published event) changes nothing, so the type is applied idempotently and
the engine keeps no event ids for it. Copies of one span share a key, hence a partition, so "first" is the log's
order and a rebuild gives the same rows.

Text PostgreSQL cannot store (a NUL character, a lone surrogate, anywhere in the name or the JSON columns) is kept
as U+FFFD rather than parking the span, and an integer too large for JSON parsers is kept as its exact digits.

**Order.** A rollout's spans are read attempt by attempt, then by ``(sequence_id, start_time, span_id)`` within an
attempt. The spans read model does not read attempts, so an attempt's place is that of its first span:
``(lowest sequence_id, earliest start_time, attempt_id)``, kept in ``span_attempts`` as spans arrive (a span that
arrives late with a lower number moves its attempt; keyset pages stay exact for everything that does not move).

**Filters** (:class:`SpanFilter`, all combined with AND): exact names (any of), a name prefix, and attribute
equality. An attribute filter ``key = value`` holds when the span's attribute ``key`` equals ``value`` as a string,
or equals the JSON scalar ``value`` spells (``1``, ``2.5``, ``true``, ``null``, ``"quoted"``): ``attr.n=1`` matches
``1`` and ``"1"``, ``attr.n="1"`` only the string. Several values for one key match any of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import orjson

from projections.base import BACKGROUND_LINGER_MS, Envelope, Projection
from projections.migrations import load_package_migrations
from projections.safe_text import safe_text
from schemas import SpanRecorded
from schemas.topics import SPANS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

_INT64 = (-(2**63), 2**63 - 1)
_COLUMNS = (
    "rollout_id", "attempt_id", "span_id", "sequence_id", "trace_id", "parent_id", "name", "kind", "start_time",
    "end_time", "status_code", "status_description", "attributes", "events", "links", "resource", "event_id",
)  # fmt: skip


# -- apply ----------------------------------------------------------------------------------------------------------
def _row(e: SpanRecorded) -> dict[str, Any]:
    return {
        "rollout_id": e.rollout_id,
        "attempt_id": e.attempt_id,
        "span_id": e.span_id,
        "sequence_id": e.sequence_id,
        "trace_id": e.trace_id,
        "parent_id": e.parent_id,
        "name": e.name,
        "kind": e.kind,
        "start_time": e.start_time,
        "end_time": e.end_time,
        "status_code": e.status.status_code,
        "status_description": e.status.description,
        "attributes": e.attributes,
        "events": [{"name": v.name, "timestamp": v.timestamp, "attributes": v.attributes} for v in e.events],
        "links": [{"trace_id": k.trace_id, "span_id": k.span_id, "attributes": k.attributes} for k in e.links],
        "resource": e.resource,
        "event_id": e.event_id,
    }


def _storable(value: Any) -> Any:
    """``value`` with every string PostgreSQL refuses made safe, and integers beyond 64 bits kept as raw digits."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(k)): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, int):
        return None if isinstance(value, float) and not math.isfinite(value) else value
    # jsonb holds any integer; orjson writes 64-bit ones only.
    return value if _INT64[0] <= value <= _INT64[1] else orjson.Fragment(str(value))


def _batch_json(rows: list[dict[str, Any]]) -> str:
    """The rows as one JSON array, made storable only when a fast check says it may be needed."""
    try:
        data = orjson.dumps(rows)
    except (orjson.JSONEncodeError, TypeError):  # a lone surrogate, an integer beyond 64 bits
        data = orjson.dumps(_storable(rows))
    # orjson writes NUL as this escape; a match may also be a literal backslash text, which costs a walk only.
    if b"\\u0000" in data:
        data = orjson.dumps(_storable(rows))
    return data.decode()  # as text: psycopg would send bytes as bytea


_NAMES = ", ".join(_COLUMNS)
#: One statement per batch: insert the new spans (copies do nothing), then count what was actually inserted into
#: the attempts' rows. Rows go in key order, so two instances overlapping in a rebalance lock in one order.
_INSERT = f"""
WITH inserted AS (
    INSERT INTO spans ({_NAMES})
    SELECT {_NAMES} FROM jsonb_populate_recordset(NULL::spans, %s::jsonb) ORDER BY rollout_id, attempt_id, span_id
    ON CONFLICT (rollout_id, attempt_id, span_id) DO NOTHING
    RETURNING rollout_id, attempt_id, sequence_id, start_time
)
INSERT INTO span_attempts (rollout_id, attempt_id, first_sequence_id, first_start_time, span_count)
SELECT rollout_id, attempt_id, min(sequence_id), min(start_time), count(*)
FROM inserted GROUP BY rollout_id, attempt_id ORDER BY rollout_id, attempt_id
ON CONFLICT (rollout_id, attempt_id) DO UPDATE SET
    first_sequence_id = least(span_attempts.first_sequence_id, EXCLUDED.first_sequence_id),
    first_start_time = least(span_attempts.first_start_time, EXCLUDED.first_start_time),
    span_count = span_attempts.span_count + EXCLUDED.span_count
"""  # noqa: S608 - constant columns


async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    """Store the batch's spans, the first copy of each key (in log order) winning."""
    first: dict[tuple[str, str, str], SpanRecorded] = {}
    for envelope in envelopes:
        event = cast("SpanRecorded", envelope.event)
        first.setdefault((event.rollout_id, event.attempt_id, event.span_id), event)
    if first:
        await conn.execute(_INSERT, (_batch_json([_row(first[k]) for k in sorted(first)]),))


PROJECTION = Projection(
    name="spans",
    version=1,
    topics=(SPANS,),
    event_types=frozenset({SpanRecorded}),
    migrations=tuple(load_package_migrations("projections", "sql/spans")),
    apply=apply,
    tables=("spans", "span_attempts"),
    idempotent_types=frozenset({SpanRecorded}),
    linger_ms=BACKGROUND_LINGER_MS,
    description="every span of every attempt (GET /v1/rollouts/{id}/spans and /trace)",
)


# -- filters --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpanFilter:
    """Which spans a read wants (see the module docstring). ``attributes``: (key, JSON texts of accepted values)."""

    attempt_id: str | None = None
    names: tuple[str, ...] = ()
    name_prefix: str | None = None
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def narrows(self) -> bool:
        """Whether any condition besides the attempt applies (the trace then prunes to the matches)."""
        return bool(self.names or self.name_prefix is not None or self.attributes)

    def condition(self) -> tuple[str, dict[str, Any]]:
        """A boolean SQL expression over the alias ``s`` and its named parameters (values never enter the SQL)."""
        parts: list[str] = []
        params: dict[str, Any] = {}
        if self.names:
            parts.append("s.name = ANY(%(f_names)s::text[])")
            params["f_names"] = list(self.names)
        if self.name_prefix is not None:
            parts.append("starts_with(s.name, %(f_prefix)s)")
            params["f_prefix"] = self.name_prefix
        for i, (key, values) in enumerate(self.attributes):
            parts.append(f"(s.attributes -> %(f_key{i})s) = ANY(%(f_values{i})s::text[]::jsonb[])")
            params[f"f_key{i}"], params[f"f_values{i}"] = key, list(values)
        return (" AND ".join(parts) or "TRUE"), params


def attribute_values(text: str) -> tuple[str, ...]:
    """The JSON values an attribute filter's ``text`` accepts: the string itself, and the JSON scalar it spells."""
    accepted = [orjson.dumps(text).decode()]
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return tuple(accepted)
    storable = isinstance(parsed, str) and _storable(parsed) == parsed
    finite = isinstance(parsed, int | float) and math.isfinite(parsed)
    if parsed is None or finite or storable:
        spelled = orjson.dumps(parsed).decode()
        if spelled not in accepted:
            accepted.append(spelled)
    return tuple(accepted)


# -- reads (run with search_path at the active generation) ----------------------------------------------------------
class SpanKey(NamedTuple):
    """Where a span sits in the routes' order within its rollout; a page's cursor is its last span's key."""

    attempt_id: str
    sequence_id: int
    start_time: datetime
    span_id: str


class SpanRow(NamedTuple):
    rollout_id: str
    attempt_id: str
    span_id: str
    sequence_id: int
    trace_id: str
    parent_id: str | None
    name: str
    kind: str
    start_time: datetime
    end_time: datetime | None
    status_code: str
    status_description: str | None
    #: the JSON columns as PostgreSQL's text, passed through to the answer unparsed
    attributes: str
    events: str
    links: str
    resource: str
    matched: bool = True

    @property
    def key(self) -> SpanKey:
        return SpanKey(self.attempt_id, self.sequence_id, self.start_time, self.span_id)

    def as_json(self) -> dict[str, Any]:
        """The span as the routes answer it; the JSON columns are embedded as they are (orjson fragments)."""
        return {
            "rollout_id": self.rollout_id,
            "attempt_id": self.attempt_id,
            "sequence_id": self.sequence_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "name": self.name,
            "kind": self.kind,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "status": {"status_code": self.status_code, "description": self.status_description},
            "attributes": orjson.Fragment(self.attributes),
            "events": orjson.Fragment(self.events),
            "links": orjson.Fragment(self.links),
            "resource": orjson.Fragment(self.resource),
        }


class AttemptSpans(NamedTuple):
    attempt_id: str
    span_count: int


class CursorMismatch(ValueError):
    """The cursor names an attempt this read does not cover (another rollout's cursor, or another attempt_id)."""


_SPAN_COLUMNS = (
    "s.rollout_id, s.attempt_id, s.span_id, s.sequence_id, s.trace_id, s.parent_id, s.name, s.kind, s.start_time, "
    "s.end_time, s.status_code, s.status_description, s.attributes::text AS attributes, s.events::text AS events, "
    "s.links::text AS links, s.resource::text AS resource"
)
_ORDER = "s.sequence_id, s.start_time, s.span_id"


def _page(query: str) -> str:
    """``query``'s rows (attempt rank first) in the routes' order, at most ``%(n)s`` of them."""
    return f"SELECT * FROM ({query}) AS page ORDER BY ord, sequence_id, start_time, span_id LIMIT %(n)s"  # noqa: S608


async def attempts(conn: AsyncConnection[Any], rollout_id: str, attempt_id: str | None = None) -> list[AttemptSpans]:
    """The rollout's attempts that have spans, in the routes' order (only ``attempt_id`` when given)."""
    cur = await conn.execute(
        "SELECT attempt_id, span_count FROM span_attempts WHERE rollout_id = %(r)s "
        "AND (%(a)s::text IS NULL OR attempt_id = %(a)s) "
        "ORDER BY first_sequence_id, first_start_time, attempt_id",
        {"r": rollout_id, "a": attempt_id},
    )
    return [AttemptSpans(*row) for row in await cur.fetchall()]


def _lateral(condition: str, *, matched_column: bool) -> str:
    """Up to ``n`` spans of each attempt in ``%(later)s``, in the routes' order: one index range scan each."""
    select = f"{_SPAN_COLUMNS}, ({condition}) AS matched" if matched_column else _SPAN_COLUMNS
    where = "TRUE" if matched_column else condition
    return (
        f"SELECT a.ord, s.* FROM unnest(%(later)s::text[]) WITH ORDINALITY AS a(attempt_id, ord) "  # noqa: S608
        f"CROSS JOIN LATERAL (SELECT {select} FROM spans s "
        f"WHERE s.rollout_id = %(rollout)s AND s.attempt_id = a.attempt_id AND {where} "
        f"ORDER BY {_ORDER} LIMIT %(n)s) AS s"
    )


async def list_spans(
    conn: AsyncConnection[Any], rollout_id: str, spans_filter: SpanFilter, *, after: SpanKey | None, limit: int
) -> tuple[list[SpanRow], bool]:
    """Up to ``limit`` matching spans after the key ``after``, in the routes' order; and whether more follow.

    Raises:
        CursorMismatch: ``after`` names an attempt outside this read.
    """
    order = [a.attempt_id for a in await attempts(conn, rollout_id, spans_filter.attempt_id)]
    condition, params = spans_filter.condition()
    params |= {"rollout": rollout_id, "n": limit + 1}
    query = _lateral(condition, matched_column=False)
    if after is not None:
        if after.attempt_id not in order:
            raise CursorMismatch(f"the cursor belongs to another read (attempt {after.attempt_id!r})")
        at = order.index(after.attempt_id)
        order = order[at + 1 :]
        # The cursor's own attempt continues after its key (a range scan from there), then the later attempts.
        query = (
            f"(SELECT 0::bigint AS ord, {_SPAN_COLUMNS} FROM spans s "  # noqa: S608 - constant fragments
            f"WHERE s.rollout_id = %(rollout)s AND s.attempt_id = %(c_attempt)s "
            f"AND (s.sequence_id, s.start_time, s.span_id) > (%(c_seq)s, %(c_start)s, %(c_span)s) AND {condition} "
            f"ORDER BY {_ORDER} LIMIT %(n)s) UNION ALL ({query})"
        )
        params |= {"c_attempt": after.attempt_id, "c_seq": after.sequence_id, "c_start": after.start_time}
        params["c_span"] = after.span_id
    params["later"] = order
    cur = await conn.execute(_page(query), params)
    rows = [SpanRow(*row[1:]) for row in await cur.fetchall()]
    return rows[:limit], len(rows) > limit


async def trace_spans(
    conn: AsyncConnection[Any], rollout_id: str, spans_filter: SpanFilter, *, limit: int
) -> tuple[list[AttemptSpans], list[SpanRow], bool]:
    """The attempts, their first ``limit`` spans in order (each marked ``matched``), and whether spans were left out."""
    order = await attempts(conn, rollout_id, spans_filter.attempt_id)
    condition, params = spans_filter.condition()
    params |= {"rollout": rollout_id, "n": limit + 1, "later": [a.attempt_id for a in order]}
    query = _lateral(condition, matched_column=True)
    cur = await conn.execute(_page(query), params)
    rows = [SpanRow(*row[1:]) for row in await cur.fetchall()]
    return order, rows[:limit], len(rows) > limit
