"""``GET /v1/rollouts/{rollout_id}/events`` (a rollout's history) and ``POST /v1/rollouts/wait``.

The history is read from the archive projection (``archive_g<N>.events``): every record keyed by the rollout
id on the topics keyed by rollout id, including records no projection could decode. Each partition's records
come in offset order (the log's order); partitions (a rollout's events sit on one partition of each topic) are
interleaved by the records' Kafka timestamps, which never reorders records within a partition.

``wait`` polls the rollouts read model every 100 ms (the engine emits no notification) and takes a pooled
connection only for each short read, never while it sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from projections.archive import PROJECTION as ARCHIVE
from projections.reading import READ_RESPONSES, not_found, reading
from projections.rollouts import PROJECTION as ROLLOUTS
from projections.rollouts import get_rollout
from projections.routes.rollouts import RolloutDetail
from projections.routes.waiting import AfterQuery, WaitQuery, wait_after
from schemas.bounds import BIGINT_MAX, ID_PATTERN, Id
from schemas.topics import TOPICS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from psycopg import AsyncConnection

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])

#: Rollout statuses no event ever leaves.
TERMINAL = ("succeeded", "failed", "cancelled")
#: How often ``wait`` looks at the read model again.
POLL_S = 0.1
MAX_WAIT_S = 300.0
#: Records of one rollout read at most (by topic, then partition and offset); ``?type=`` narrows a longer history.
MAX_HISTORY = 10_000


# -- history ----------------------------------------------------------------------------------------------------
class HistoryEvent(BaseModel):
    type: str | None
    version: int | None
    event_id: UUID | None
    occurred_at: datetime | None
    topic: str
    partition: int
    offset: int
    #: the record's Kafka timestamp (what the partitions are interleaved by)
    timestamp: datetime
    #: the event as published (JSON), or None for a record that is not JSON
    event: Any = None


class RolloutHistory(BaseModel):
    rollout_id: str
    events: list[HistoryEvent]
    total: int
    limit: int
    offset: int


def _rollout_topics(prefix: str) -> list[str]:
    return [t.full_name(prefix) for t in TOPICS if t.key == "rollout_id"]


def _in_log_order(rows: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """Rows sorted by (topic, partition, offset), merged across partitions by timestamp (a stable k-way merge)."""
    partitions = [list(group) for _, group in itertools.groupby(rows, key=lambda r: (r[0], r[1]))]
    return heapq.merge(*partitions, key=lambda r: r[6])


async def rollout_history(
    conn: AsyncConnection[Any], rollout_id: str, topics: list[str], types: list[str]
) -> list[HistoryEvent] | None:
    """Every archived record of ``rollout_id`` in log order (``types`` filters when given); None: no record at all."""
    cur = await conn.execute(
        'SELECT topic, partition, "offset", type, version, event_id, timestamp, payload FROM events '
        "WHERE key = %(key)s AND topic = ANY(%(topics)s) "
        "AND (cardinality(%(types)s::text[]) = 0 OR type = ANY(%(types)s)) "
        'ORDER BY topic, partition, "offset" LIMIT %(cap)s',
        {"key": rollout_id.encode(), "topics": topics, "types": types, "cap": MAX_HISTORY},
    )
    rows = await cur.fetchall()
    if not rows and types:
        cur = await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM events WHERE key = %s AND topic = ANY(%s))", (rollout_id.encode(), topics)
        )
        exists = await cur.fetchone()
        if exists and exists[0]:
            return []
    if not rows:
        return None
    return [
        HistoryEvent(
            topic=topic, partition=partition, offset=offset, type=kind, version=version, event_id=event_id,
            timestamp=timestamp, event=payload,
            occurred_at=payload.get("occurred_at") if isinstance(payload, dict) else None,
        )
        for topic, partition, offset, kind, version, event_id, timestamp, payload in _in_log_order(rows)
    ]  # fmt: skip


@router.get(
    "/{rollout_id}/events",
    response_model=RolloutHistory,
    responses={**READ_RESPONSES, **not_found("rollout (none of its events archived)")},
)
async def history_route(
    request: Request,
    rollout_id: Annotated[str, Path(pattern=ID_PATTERN)],
    *,
    type: Annotated[list[str], Query(description="only these event types (repeatable)")] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 1000,
    offset: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    after: AfterQuery = None,
    wait_ms: WaitQuery = 5000,
) -> RolloutHistory:
    """The rollout's events in log order: enqueue, every decision, attempts, spans, rewards (404: none archived)."""
    topics = _rollout_topics(request.app.state.settings.topic_prefix)
    await wait_after(request, ARCHIVE, after, wait_ms)
    async with request.app.state.pool.connection() as conn, reading(conn, ARCHIVE):
        events = await rollout_history(conn, rollout_id, topics, type)
    if events is None:
        raise HTTPException(404, f"no events of rollout {rollout_id!r}")
    page = events[offset : offset + limit]
    return RolloutHistory(rollout_id=rollout_id, events=page, total=len(events), limit=limit, offset=offset)


# -- wait -------------------------------------------------------------------------------------------------------
class WaitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rollout_ids: list[Id] = Field(min_length=1, max_length=1000)
    timeout_s: float = Field(ge=0, le=MAX_WAIT_S, description="answer after this long even if some are not done")


class WaitAnswer(BaseModel):
    #: the named rollouts that are terminal, as ``GET /v1/rollouts/{id}`` answers them, in the order asked
    rollouts: list[RolloutDetail]
    #: the named rollouts not terminal (or not known) when the answer was made
    pending: list[str]


async def _terminal_ids(conn: AsyncConnection[Any], rollout_ids: list[str]) -> set[str]:
    cur = await conn.execute(
        "SELECT rollout_id FROM rollouts WHERE rollout_id = ANY(%s) AND status = ANY(%s)",
        (rollout_ids, list(TERMINAL)),
    )
    return {row[0] for row in await cur.fetchall()}


async def _details(conn: AsyncConnection[Any], rollout_ids: list[str]) -> list[RolloutDetail]:
    details = []
    for rollout_id in rollout_ids:
        found = await get_rollout(conn, rollout_id)
        if found is not None:
            row, attempts = found
            # As GET /v1/rollouts/{id} builds it (the test compares both answers): the newest attempt also inline.
            latest = next((vars(a) for a in attempts if a.attempt_id == row.latest_attempt_id), None)
            data = {**vars(row), "latest_attempt": latest, "attempts": [vars(a) for a in attempts]}
            details.append(RolloutDetail.model_validate(data))
    return details


@router.post("/wait", response_model=WaitAnswer)
async def wait_route(request: Request, body: WaitRequest) -> WaitAnswer:
    """Answer as soon as every named rollout is succeeded, failed or cancelled, or when ``timeout_s`` has passed."""
    wanted = list(dict.fromkeys(body.rollout_ids))
    deadline = time.monotonic() + body.timeout_s
    while True:
        # One short read transaction per poll; the connection goes back to the pool before the sleep.
        async with request.app.state.pool.connection() as conn, reading(conn, ROLLOUTS):
            done = await _terminal_ids(conn, wanted)
            remaining = deadline - time.monotonic()
            if len(done) == len(wanted) or remaining <= 0:
                # Terminal is final, so the details read in this same snapshot are the answer.
                details = await _details(conn, [i for i in wanted if i in done])
                return WaitAnswer(rollouts=details, pending=[i for i in wanted if i not in done])
        await asyncio.sleep(min(POLL_S, remaining))
