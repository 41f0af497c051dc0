"""Reading a projection: at its active generation, optionally after waiting for a command's position token.

A command answers with a token (``topic:partition:offset,...``). A read route that gets it as ``?after=`` waits,
bounded, until the projection's stored position in every named partition it reads has passed that offset, so
the reader sees its own write. Partitions of topics the projection does not read are ignored: it never applies
them. A partition the broker does not have is refused at once (no command can have written there, so the wait
could only time out). When the wait times out, :class:`ProjectionNotReady` says which partitions are behind and
by how much.

The wait holds no database connection: each check borrows one from the pool for two short queries, and between
checks the read sleeps on the process's :class:`~projections.applied.AppliedListener`, which wakes it when the
projection commits a batch (or, without a listener, re-checks every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from producers.http import INVALID_RESPONSES, ErrorAnswer
from projections.applied import FALLBACK_POLL_S
from projections.errors import ProjectionNotReady
from projections.tracking import Generation, active_generation, set_search_path
from schemas import InvalidPositionToken, parse_token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from aiokafka import AIOKafkaClient
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    from projections.applied import AppliedListener
    from projections.base import Projection

#: Every status a read route answers besides 200 (FastAPI documents only 200 and 422 by itself): pass as the
#: router's ``responses=``.
READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    **INVALID_RESPONSES,
    400: {"model": ErrorAnswer, "description": "the ?after= token does not parse or names no existing partition"},
    503: {"model": ErrorAnswer, "description": "the projection has not started, or not applied ?after= in time"},
}


def not_found(what: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a read route that answers 404 when ``what`` does not exist."""
    return {404: {"model": ErrorAnswer, "description": f"no such {what}"}}


#: How long a read waits for fresh broker metadata when a token names a partition the cached metadata lacks.
METADATA_TIMEOUT_S = 5.0


Positions = dict[tuple[str, int], int]


#: The active generation of a projection and its stored positions, in one round trip (a generation that has not
#: stored any position yet comes back as one row of nulls).
_POSITIONS_SQL = """
SELECT g.generation, g.version, o.topic, o.partition, o.next_offset
FROM projection_generations g LEFT JOIN projection_offsets o ON o.projection = g.schema_name
WHERE g.projection = %s AND g.state = 'active'
"""


async def _positions(pool: AsyncConnectionPool[Any], projection: Projection) -> tuple[Generation | None, Positions]:
    """The active generation and its stored positions (next offset per partition), in one short pool borrowing."""
    async with pool.connection() as conn:
        cur = await conn.execute(_POSITIONS_SQL, (projection.name,))
        rows = await cur.fetchall()
    if not rows:
        return None, {}
    gen = Generation(projection.name, rows[0][0], rows[0][1], "active")
    return gen, {(t, p): int(o) for _, _, t, p, o in rows if t is not None}


def _behind(wanted: Positions, stored: Positions) -> dict[tuple[str, int], tuple[int, int]]:
    """The partitions not applied far enough: (wanted offset, next offset)."""
    return {tp: (o, stored.get(tp, 0)) for tp, o in wanted.items() if stored.get(tp, 0) <= o}


async def check_partitions_exist(kafka: AIOKafkaClient, partitions: Iterable[tuple[str, int]]) -> None:
    """Raise InvalidPositionToken for a (topic, partition) the broker does not have.

    The client's cached metadata answers; it is refreshed (once, bounded) only when it lacks a partition, since
    partitions may have been added since it was fetched.
    """

    def missing() -> list[tuple[str, int]]:
        return sorted(tp for tp in partitions if tp[1] not in (kafka.cluster.partitions_for_topic(tp[0]) or ()))

    if not missing():
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(kafka.force_metadata_update(), METADATA_TIMEOUT_S)
    if absent := missing():
        named = ", ".join(f"{t}:{p}" for t, p in absent)
        raise InvalidPositionToken(f"the position token names partitions that do not exist: {named}")


async def wait_for_token(
    pool: AsyncConnectionPool[Any],
    projection: Projection,
    token: str,
    *,
    topic_prefix: str,
    timeout_s: float,
    kafka: AIOKafkaClient | None = None,
    applied: AppliedListener | None = None,
) -> None:
    """Return once ``projection`` has applied every position of ``token`` it reads; else raise after the wait.

    ``kafka``: a bootstrapped client whose metadata tells which partitions exist (none: not checked).
    ``applied``: the process's listener, which wakes the wait when the projection commits (none: a slow poll).

    Raises:
        InvalidPositionToken: the token does not parse, or names a partition that does not exist (a 400).
        ProjectionNotReady: the wait timed out (a 503).
    """
    topics = set(projection.topic_names(topic_prefix))
    wanted = {(p.topic, p.partition): p.offset for p in parse_token(token) if p.topic in topics}
    if kafka is not None:
        await check_partitions_exist(kafka, wanted)
    deadline = time.monotonic() + timeout_s
    while wanted:
        # Marked before the check: a commit landing between the check and the sleep still wakes this read.
        if applied is None:
            since = 0
            gen, stored = await _positions(pool, projection)
        else:
            since = applied.mark()
            # Every read woken by one notification shares one query (else N waiters would cost N per commit).
            gen, stored = await applied.shared(projection.name, since, lambda: _positions(pool, projection))
        pending = _behind(wanted, stored)
        if not pending:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            behind = ", ".join(f"{t}:{p} at {nxt} needs > {o}" for (t, p), (o, nxt) in sorted(pending.items()))
            raise ProjectionNotReady(
                f"projection {projection.name} has not applied the requested position within {timeout_s:g}s "
                f"({behind}); retry later or without ?after="
            )
        if applied is not None and gen is not None:
            await applied.wait(gen.schema, since, remaining)
        else:
            await asyncio.sleep(min(remaining, FALLBACK_POLL_S))


@contextlib.asynccontextmanager
async def reading(conn: AsyncConnection[Any], projection: Projection) -> AsyncIterator[Generation]:
    """A read transaction whose ``search_path`` is the projection's active generation (a consistent snapshot)."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        gen = await active_generation(conn, projection.name)
        if gen is None:
            raise ProjectionNotReady(f"projection {projection.name} has not started yet (`agl projections run`)")
        await set_search_path(conn, gen.schema, local=True)
        yield gen
