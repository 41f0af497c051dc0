"""Reading a projection: at its active generation, optionally after waiting for a command's position token.

A command answers with a token (``topic:partition:offset,...``). A read route that gets it as ``?after=`` waits,
bounded, until the projection's stored position in every named partition it reads has passed that offset, so
the reader sees its own write. Partitions of topics the projection does not read are ignored: it never applies
them. A partition the broker does not have is refused at once (no command can have written there, so the wait
could only time out). When the wait times out, :class:`ProjectionNotReady` says which partitions are behind and
by how much.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from producers.http import INVALID_RESPONSES, ErrorAnswer
from projections.errors import ProjectionNotReady
from projections.tracking import Generation, active_generation, load_positions, set_search_path
from schemas import InvalidPositionToken, parse_token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from aiokafka import AIOKafkaClient
    from psycopg import AsyncConnection

    from projections.base import Projection

POLL_S = 0.05
#: Every status a read route answers besides 200 (FastAPI documents only 200 and 422 by itself): pass as the
#: router's ``responses=``.
READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    **INVALID_RESPONSES,
    400: {"model": ErrorAnswer, "description": "the ?after= token does not parse or names no existing partition"},
    503: {"model": ErrorAnswer, "description": "the projection has not started, or not applied ?after= in time"},
}
#: How long a read waits for fresh broker metadata when a token names a partition the cached metadata lacks.
METADATA_TIMEOUT_S = 5.0


async def _pending(
    conn: AsyncConnection[Any], projection: Projection, wanted: dict[tuple[str, int], int]
) -> tuple[Generation | None, dict[tuple[str, int], tuple[int, int]]]:
    """The active generation and the partitions it has not applied far enough: (wanted offset, next offset)."""
    gen = await active_generation(conn, projection.name)
    if gen is None:
        return None, {tp: (offset, 0) for tp, offset in wanted.items()}
    stored = await load_positions(conn, gen.schema)
    return gen, {tp: (o, stored.get(tp, 0)) for tp, o in wanted.items() if stored.get(tp, 0) <= o}


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
    conn: AsyncConnection[Any],
    projection: Projection,
    token: str,
    *,
    topic_prefix: str,
    timeout_s: float,
    kafka: AIOKafkaClient | None = None,
) -> None:
    """Return once ``projection`` has applied every position of ``token`` it reads; else raise after the wait.

    ``kafka``: a bootstrapped client whose metadata tells which partitions exist (none: not checked).

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
        _, pending = await _pending(conn, projection, wanted)
        if not pending:
            return
        if time.monotonic() >= deadline:
            behind = ", ".join(f"{t}:{p} at {nxt} needs > {o}" for (t, p), (o, nxt) in sorted(pending.items()))
            raise ProjectionNotReady(
                f"projection {projection.name} has not applied the requested position within {timeout_s:g}s "
                f"({behind}); retry later or without ?after="
            )
        await asyncio.sleep(POLL_S)


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
