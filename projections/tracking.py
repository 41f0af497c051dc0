"""Positions and generations: where each projection stands, and which of its table sets readers use.

Positions live in ``projection_offsets`` under the generation's schema name (``rollouts_g1``), so a rebuild
(generation 2) keeps its own positions beside the live ones. ``next_offset`` is the first offset not applied yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg import sql

from projections.base import schema_name
from projections.errors import RebuildConflict
from projections.migrations import migrate

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from projections.base import Projection

TopicPartitionKey = tuple[str, int]
GenerationState = Literal["building", "active", "retired"]


@dataclass(frozen=True)
class Generation:
    projection: str
    generation: int
    version: int
    state: GenerationState

    @property
    def schema(self) -> str:
        return schema_name(self.projection, self.generation)


async def _fetch_generation(conn: AsyncConnection[Any], projection: str, state: str) -> Generation | None:
    cur = await conn.execute(
        "SELECT generation, version, state FROM projection_generations WHERE projection = %s AND state = %s",
        (projection, state),
    )
    row = await cur.fetchone()
    return None if row is None else Generation(projection, row[0], row[1], row[2])


async def active_generation(conn: AsyncConnection[Any], projection: str) -> Generation | None:
    return await _fetch_generation(conn, projection, "active")


async def building_generation(conn: AsyncConnection[Any], projection: str) -> Generation | None:
    return await _fetch_generation(conn, projection, "building")


async def generation_state(conn: AsyncConnection[Any], gen: Generation) -> str | None:
    cur = await conn.execute(
        "SELECT state FROM projection_generations WHERE projection = %s AND generation = %s",
        (gen.projection, gen.generation),
    )
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def _create_generation(conn: AsyncConnection[Any], projection: Projection, state: str) -> Generation:
    cur = await conn.execute(
        "SELECT coalesce(max(generation), 0) + 1 FROM projection_generations WHERE projection = %s",
        (projection.name,),
    )
    row = await cur.fetchone()
    assert row is not None
    gen = Generation(projection.name, int(row[0]), projection.version, state)  # type: ignore[arg-type]
    await conn.execute(
        "INSERT INTO projection_generations (projection, generation, schema_name, version, state, activated_at) "
        "VALUES (%s, %s, %s, %s, %s, CASE WHEN %s = 'active' THEN now() END)",
        (gen.projection, gen.generation, gen.schema, gen.version, state, state),
    )
    # A building generation gets its deferred indexes from the rebuild, once its rows are loaded.
    await install_schema(conn, projection, gen, deferred_indexes=state == "active")
    return gen


async def install_schema(
    conn: AsyncConnection[Any], projection: Projection, gen: Generation, *, deferred_indexes: bool = True
) -> None:
    """Create the generation's schema and run the projection's migrations (and deferred indexes) inside it."""
    await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(gen.schema)))
    await set_search_path(conn, gen.schema, local=True)
    await migrate(conn, projection.name, projection.migrations)
    if deferred_indexes:
        for statement in projection.deferred_indexes:
            await conn.execute(statement.encode())
    await conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {}.applied_events (event_id uuid PRIMARY KEY)").format(
            sql.Identifier(gen.schema)
        )
    )


async def ensure_active_generation(conn: AsyncConnection[Any], projection: Projection) -> Generation:
    """The generation readers use, created (generation 1, empty) when the projection is new.

    Pending migrations of the same version are applied to it; a new version needs a rebuild.
    """
    async with conn.transaction():
        # Serialise concurrent first starts of several instances of one projection.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"agl.projection.{projection.name}",))
        gen = await active_generation(conn, projection.name)
        if gen is None:
            return await _create_generation(conn, projection, "active")
        if gen.version == projection.version:
            await install_schema(conn, projection, gen)
        return gen


async def begin_rebuild(conn: AsyncConnection[Any], projection: Projection) -> tuple[Generation, bool]:
    """The building generation (resumed if one exists, else created); the flag says whether it was resumed."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"agl.projection.{projection.name}",))
        gen = await building_generation(conn, projection.name)
        if gen is not None:
            if gen.version != projection.version:
                raise RebuildConflict(
                    f"a rebuild of {projection.name} to version {gen.version} is pending; "
                    "cancel it first (`agl projections rebuild --cancel`)"
                )
            return gen, True
        return await _create_generation(conn, projection, "building"), False


#: ``maintenance_work_mem`` of a deferred index build: pgvector keeps the whole HNSW graph in it (about 2 kB per
#: 384-dimension row) and is many times slower once the graph spills. Only what the build uses is allocated, but a
#: parallel build reserves all of it as shared memory (see ``build_deferred_indexes``).
INDEX_BUILD_MEMORY = "1GB"


async def build_deferred_indexes(
    conn: AsyncConnection[Any], projection: Projection, gen: Generation, *, memory: str = INDEX_BUILD_MEMORY
) -> None:
    """Build ``projection.deferred_indexes`` in ``gen`` over the rows already there, then refresh its statistics.

    Each index is built in its own transaction (none holds positions: this adds no row, so exactly-once is
    untouched). A parallel build reserves ``memory`` as shared memory, which a small ``/dev/shm`` (a container's
    default 64 MB) refuses: the build is then retried by the backend alone. ``ANALYZE`` gives the planner the
    loaded tables' statistics before readers switch to them, rather than whenever autovacuum comes by.
    """
    for statement in projection.deferred_indexes:
        try:
            await _build_index(conn, gen, statement, memory, parallel=True)
        except (psycopg.errors.DiskFull, psycopg.errors.OutOfMemory):
            await _build_index(conn, gen, statement, memory, parallel=False)
    if projection.deferred_indexes:
        for table in projection.tables:
            await conn.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(gen.schema), sql.Identifier(table)))


async def _build_index(
    conn: AsyncConnection[Any], gen: Generation, statement: str, memory: str, *, parallel: bool
) -> None:
    async with conn.transaction():
        await set_search_path(conn, gen.schema, local=True)
        await conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(memory)))
        if not parallel:
            await conn.execute("SET LOCAL max_parallel_maintenance_workers = 0")
        await conn.execute(statement.encode())


async def drop_generation(conn: AsyncConnection[Any], gen: Generation) -> None:
    """Remove a generation's tables, positions and dead letters."""
    async with conn.transaction():
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(gen.schema)))
        await conn.execute("DELETE FROM projection_offsets WHERE projection = %s", (gen.schema,))
        await conn.execute(
            "DELETE FROM dead_letters WHERE projection = %s AND generation = %s", (gen.projection, gen.generation)
        )
        await conn.execute(
            "DELETE FROM projection_generations WHERE projection = %s AND generation = %s",
            (gen.projection, gen.generation),
        )


async def activate(conn: AsyncConnection[Any], new: Generation, old: Generation | None) -> None:
    """Switch readers to ``new`` (call inside the caller's transaction, so the switch is atomic)."""
    if old is not None:
        await conn.execute(
            "UPDATE projection_generations SET state = 'retired' WHERE projection = %s AND generation = %s",
            (old.projection, old.generation),
        )
    await conn.execute(
        "UPDATE projection_generations SET state = 'active', activated_at = now() "
        "WHERE projection = %s AND generation = %s",
        (new.projection, new.generation),
    )


async def set_search_path(conn: AsyncConnection[Any], schema: str, *, local: bool) -> None:
    stmt = "SET LOCAL search_path TO {}, public" if local else "SET search_path TO {}, public"
    await conn.execute(sql.SQL(stmt).format(sql.Identifier(schema)))


# -- positions ---------------------------------------------------------------------------------------------
async def load_positions(conn: AsyncConnection[Any], consumer: str) -> dict[TopicPartitionKey, int]:
    cur = await conn.execute(
        "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = %s", (consumer,)
    )
    return {(t, p): int(o) for t, p, o in await cur.fetchall()}


async def ensure_position_rows(conn: AsyncConnection[Any], consumer: str, tps: Iterable[TopicPartitionKey]) -> None:
    """Create missing rows at offset 0, so a batch can always lock its rows instead of racing to insert them."""
    rows = [(consumer, t, p) for t, p in tps]
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES (%s, %s, %s, 0) "
            "ON CONFLICT DO NOTHING",
            rows,
        )


async def lock_positions(
    conn: AsyncConnection[Any], consumer: str, tps: Iterable[TopicPartitionKey]
) -> dict[TopicPartitionKey, int]:
    """Lock and read the positions of ``tps``: a second instance applying the same partition waits here."""
    wanted = sorted(set(tps))
    cur = await conn.execute(
        "SELECT topic, partition, next_offset FROM projection_offsets "
        "WHERE projection = %s AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[])) "
        "ORDER BY topic, partition FOR UPDATE",
        (consumer, [t for t, _ in wanted], [p for _, p in wanted]),
    )
    return {(t, p): int(o) for t, p, o in await cur.fetchall()}


async def save_positions(
    conn: AsyncConnection[Any],
    consumer: str,
    positions: dict[TopicPartitionKey, tuple[int, int | None]],
    rates: dict[TopicPartitionKey, float],
) -> None:
    """Store ``next_offset``, the last record's timestamp (ms) and the events/s rate per partition."""
    rows = [(o, ts, rates.get((t, p), 0.0), consumer, t, p) for (t, p), (o, ts) in positions.items()]
    async with conn.cursor() as cur:
        await cur.executemany(
            "UPDATE projection_offsets SET next_offset = %s, "
            "last_record_at = coalesce(to_timestamp(%s::bigint / 1000.0), last_record_at), "
            "events_per_s = %s, updated_at = now() WHERE projection = %s AND topic = %s AND partition = %s",
            rows,
        )
