"""Zero-downtime rebuild: fill the next generation from offset 0 while readers use the current one, then switch.

1. ``begin_rebuild`` creates (or resumes) the *building* generation: its own schema, tables and positions.
2. A worker without a consumer group reads every partition from the building generation's stored positions and
   applies up to a target: the live generation's positions (or the last stable offsets when there is none). It
   never applies past the target, so both generations stand on the same events when they are compared. A
   partition whose only records left below the target are transaction markers (or aborted records) counts as
   reached: the consumer reads committed records and its position moves past those.
3. Once caught up the first time, the projection's ``deferred_indexes`` are built over the loaded rows (one bulk
   build each, far cheaper than maintaining them row by row during the catch-up) and its tables analysed.
4. Once caught up, the live generation's position rows are locked only long enough to check they equal the
   targets and to open a snapshot on a second connection; the checksums of both generations are computed in
   that snapshot while the live worker goes on. A table whose checksums differ (same version) refuses the switch
   with :class:`ChecksumMismatch` naming it. Then one transaction switches readers; the live worker sees its
   generation retired and follows the new one from the new one's own positions.
5. The replaced generation is kept until the transactions that may still read it have ended (readers resolve
   the active schema once per request, in a snapshot), then dropped, unless ``drop_old=False`` keeps it for
   ``rollback``. Generations retired by earlier rebuilds are dropped then too.

Stopping (SIGINT) leaves the building generation consistent: rerunning resumes it; ``cancel`` drops it.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import psycopg
from aiokafka import TopicPartition
from psycopg import sql

from consumers.errors import ChecksumMismatch
from consumers.worker import ProjectionWorker
from projections.errors import RebuildConflict
from projections.tracking import (
    INDEX_BUILD_MEMORY,
    Generation,
    TopicPartitionKey,
    activate,
    active_generation,
    begin_rebuild,
    build_deferred_indexes,
    building_generation,
    drop_generation,
    load_positions,
    lock_positions,
)

if TYPE_CHECKING:
    from consumers.batch import BatchOutcome, Record
    from projections.base import Projection


@dataclass
class Progress:
    position: int
    high_watermark: int
    events_per_s: float
    eta_s: float | None


@dataclass
class RebuildResult:
    generation: Generation
    resumed: bool
    switched: bool
    events: int = 0
    seconds: float = 0.0
    #: table -> (checksum of the new generation, checksum of the one it replaced or None)
    checksums: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    #: generations dropped after the switch (the replaced one unless kept, and older retired ones)
    dropped: list[Generation] = field(default_factory=list)


#: How long a finished rebuild waits for transactions that may still read the replaced generation.
READERS_DRAIN_S = 30.0


async def table_checksum(conn: psycopg.AsyncConnection[Any], schema: str, table: str) -> str:
    """Row count and an order-independent digest of every row's text: sums of the rows' 128-bit md5 halves.

    A sum needs constant memory, where an ordered ``string_agg`` of every row's digest grows with the table.
    """
    query = sql.SQL(
        "SELECT count(*), "
        "coalesce(sum(('x' || left(h, 16))::bit(64)::bigint::numeric), 0), "
        "coalesce(sum(('x' || right(h, 16))::bit(64)::bigint::numeric), 0) "
        "FROM (SELECT md5(t::text) AS h FROM {}.{} t) AS rows"
    ).format(sql.Identifier(schema), sql.Identifier(table))
    cur = await conn.execute(query)
    row = await cur.fetchone()
    assert row is not None
    return f"{row[0]}:{int(row[1]):x}:{int(row[2]):x}"


async def rollback(database_url: str, projection: Projection) -> tuple[Generation, Generation]:
    """Switch readers back to the generation the last rebuild replaced; return (restored, retired).

    Only to a generation of ``projection.version`` (the code that will write it) that still exists (a rebuild
    with ``drop_old=False``, `agl projections rebuild --keep-old`). Its positions are where it stood at the
    switch: its worker applies the events since from there.
    """
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"agl.projection.{projection.name}",))
            current = await active_generation(conn, projection.name)
            if current is None:
                raise RebuildConflict(f"projection {projection.name} has no active generation to roll back")
            cur = await conn.execute(
                "SELECT generation, version FROM projection_generations "
                "WHERE projection = %s AND state = 'retired' AND generation < %s ORDER BY generation DESC LIMIT 1",
                (projection.name, current.generation),
            )
            row = await cur.fetchone()
            if row is None:
                raise RebuildConflict(
                    f"no earlier generation of {projection.name} is kept (`agl projections rebuild --keep-old` "
                    "keeps the replaced one)"
                )
            previous = Generation(projection.name, int(row[0]), int(row[1]), "retired")
            if previous.version != projection.version:
                raise RebuildConflict(
                    f"{previous.schema} was built by version {previous.version} of {projection.name}, this code is "
                    f"version {projection.version}: roll back with the code of version {previous.version}"
                )
            # The live worker checks its generation under these locks: a batch in flight commits first.
            await conn.execute(
                "SELECT 1 FROM projection_offsets WHERE projection = %s ORDER BY topic, partition FOR UPDATE",
                (current.schema,),
            )
            await activate(conn, previous, current)
        return Generation(previous.projection, previous.generation, previous.version, "active"), current


async def wait_for_readers(conn: psycopg.AsyncConnection[Any], *, timeout_s: float) -> bool:
    """Wait until every transaction of this database that began before now has ended; ``False`` on timeout."""
    cur = await conn.execute("SELECT clock_timestamp()")
    row = await cur.fetchone()
    assert row is not None
    deadline = time.monotonic() + timeout_s
    while True:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start < %s",
            (row[0],),
        )
        left = await cur.fetchone()
        if left is None or left[0] == 0:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


async def cancel_rebuild(database_url: str, projection: str) -> Generation | None:
    """Drop the building generation of ``projection``, if any; the live one is untouched."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        gen = await building_generation(conn, projection)
        if gen is not None:
            await drop_generation(conn, gen)
        return gen


class Rebuild:
    """One rebuild run. ``run()`` returns when switched, or when ``stop`` is set (resumable)."""

    def __init__(
        self,
        projection: Projection,
        *,
        bootstrap: str,
        database_url: str,
        topic_prefix: str = "",
        batch_size: int = 5000,
        drop_old: bool = True,
        on_progress: Callable[[Progress], None] | None = None,
        readers_drain_s: float = READERS_DRAIN_S,
        index_memory: str = INDEX_BUILD_MEMORY,
    ) -> None:
        self.projection = projection
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.topic_prefix = topic_prefix
        self.batch_size = batch_size
        self.drop_old = drop_old
        self.on_progress = on_progress
        self.readers_drain_s = readers_drain_s
        self.index_memory = index_memory
        self._targets: dict[TopicPartitionKey, int] = {}
        self._positions: dict[TopicPartitionKey, int] = {}
        #: per partition, the offset of the last record below the target this run has seen
        self._last_below: dict[TopicPartitionKey, int] = {}
        self._worker: ProjectionWorker | None = None

    async def run(self, stop: asyncio.Event) -> RebuildResult:
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            gen, resumed = await begin_rebuild(conn, self.projection)
            result = RebuildResult(gen, resumed, switched=False)
            worker = ProjectionWorker(
                self.projection,
                bootstrap=self.bootstrap,
                database_url=self.database_url,
                topic_prefix=self.topic_prefix,
                generation=gen,
                use_group=False,
                batch_size=self.batch_size,
            )
            started = time.monotonic()
            self._worker = worker
            async with worker:
                assert worker.consumer is not None
                self._positions = await load_positions(conn, gen.schema)
                indexed = False
                while not stop.is_set():
                    old = await active_generation(conn, self.projection.name)
                    await self._set_targets(conn, worker, old)
                    if worker.applied_total == 0:
                        started = time.monotonic()  # the rate counts applying, not connecting and planning
                    await self._catch_up(worker, stop, started)
                    if stop.is_set():
                        break
                    if not indexed:
                        # Once, over the rows caught up so far; later rounds write through the built indexes.
                        await build_deferred_indexes(conn, self.projection, gen, memory=self.index_memory)
                        indexed = True
                    if await self._try_switch(conn, gen, old, result):
                        break
            if result.switched:
                await self._drop_replaced(conn, gen, old, result)
            result.events = worker.applied_total
            result.seconds = time.monotonic() - started
        return result

    async def _set_targets(
        self, conn: psycopg.AsyncConnection[Any], worker: ProjectionWorker, old: Generation | None
    ) -> None:
        assert worker.consumer is not None
        tps = sorted(worker.consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        if old is not None:
            stored = await load_positions(conn, old.schema)
            self._targets = {(tp.topic, tp.partition): stored.get((tp.topic, tp.partition), 0) for tp in tps}
        else:
            from consumers.watermarks import fetch_watermarks

            marks = await fetch_watermarks(self.bootstrap, {(tp.topic, tp.partition): 0 for tp in tps})
            self._targets = {tp: mark.high_watermark for tp, mark in marks.items()}
        for tp in tps:
            key = (tp.topic, tp.partition)
            if self._positions.get(key, 0) < self._targets[key] and tp in worker.consumer.paused():
                worker.seek(tp, self._positions.get(key, 0))
                worker.consumer.resume(tp)

    def _caught_up(self) -> bool:
        return all(self._reached(tp) for tp in self._targets)

    def _reached(self, tp: TopicPartitionKey) -> bool:
        """The building generation has applied every record of ``tp`` below its target.

        Either its stored position is there, or the consumer has read past the target and every record it met
        below the target is applied: what lies between is transaction markers or aborted records.
        """
        position, target = self._positions.get(tp, 0), self._targets[tp]
        if position >= target:
            return True
        assert self._worker is not None
        consumed = self._worker.consumed_to.get(TopicPartition(*tp), 0)
        return consumed >= target and position > self._last_below.get(tp, -1)

    async def _catch_up(self, worker: ProjectionWorker, stop: asyncio.Event, started: float) -> None:
        """Apply records below the targets; pause each partition as it reaches its target."""
        consumer = worker.consumer
        assert consumer is not None
        last_report = 0.0

        def below_target(tp: TopicPartition, records: list[Record]) -> slice:
            key = (tp.topic, tp.partition)
            target = self._targets.get(key, 0)
            end = bisect.bisect_left(records, target, key=attrgetter("offset"))
            if end > 0:
                self._last_below[key] = max(self._last_below.get(key, -1), records[end - 1].offset)
            if end < len(records):
                # Reached: the records beyond are dropped, and the next round seeks back to the position.
                consumer.pause(tp)
            return slice(0, end)

        def applied(outcome: BatchOutcome) -> None:
            nonlocal last_report
            self._positions.update(outcome.positions)
            self._pause_reached(worker)
            if self.on_progress and time.monotonic() - last_report > 0.5:
                last_report = time.monotonic()
                self.on_progress(self._progress(worker, started))

        self._pause_reached(worker)
        await worker.pump(stop, below_target, applied, until=self._caught_up)
        if self.on_progress:
            self.on_progress(self._progress(worker, started))

    def _pause_reached(self, worker: ProjectionWorker) -> None:
        assert worker.consumer is not None
        for topic, partition in self._targets:
            if self._reached((topic, partition)):
                worker.consumer.pause(TopicPartition(topic, partition))

    def _progress(self, worker: ProjectionWorker, started: float) -> Progress:
        position = sum(min(self._positions.get(tp, 0), t) for tp, t in self._targets.items())
        target = sum(self._targets.values())
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = worker.applied_total / elapsed
        eta = (target - position) / rate if rate > 0 else None
        return Progress(position, target, rate, eta)

    async def _try_switch(
        self, conn: psycopg.AsyncConnection[Any], gen: Generation, old: Generation | None, result: RebuildResult
    ) -> bool:
        """Compare with the live generation where both stand on the same events, then switch readers.

        ``False``: the live worker moved on (or a live generation appeared): catch up to its new positions first.

        Raises:
            ChecksumMismatch: a table differs from the live one built by the same version.
        """
        if old is not None:
            checksums = await self._compare(conn, gen, old)
            if checksums is None:
                return False
            result.checksums = checksums
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"agl.projection.{gen.projection}",))
            if await active_generation(conn, self.projection.name) != old:
                return False  # a live worker created the first generation meanwhile: build up to it
            if await building_generation(conn, self.projection.name) != gen:
                raise RebuildConflict(f"{gen.schema} was cancelled while it was being built")
            if old is not None:
                # Not to compare (that is done): a live batch in flight checks its generation under these locks.
                await lock_positions(conn, old.schema, self._targets)
            else:
                for table in self.projection.tables:
                    result.checksums[table] = (await table_checksum(conn, gen.schema, table), None)
            await activate(conn, gen, old)
        result.switched = True
        return True

    async def _compare(
        self, conn: psycopg.AsyncConnection[Any], gen: Generation, old: Generation
    ) -> dict[str, tuple[str, str | None]] | None:
        """Checksums of both generations in one snapshot where the live positions equal the targets.

        The live rows are locked only while a second connection opens that snapshot, not while it is summed.
        """
        # Autocommit, so the BEGIN below is the transaction's own (psycopg would otherwise open one first).
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as snap:
            async with conn.transaction():
                live = await lock_positions(conn, old.schema, self._targets)
                if any(live.get(tp, 0) != target for tp, target in self._targets.items()):
                    return None
                await snap.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                await snap.execute("SELECT 1")  # the snapshot is taken by the first statement, under our locks
            checksums: dict[str, tuple[str, str | None]] = {}
            for table in self.projection.tables:
                checksums[table] = (
                    await table_checksum(snap, gen.schema, table),
                    await table_checksum(snap, old.schema, table) if gen.version == old.version else None,
                )
            await snap.execute("COMMIT")
        for table, (new_sum, old_sum) in checksums.items():
            if old_sum is not None and new_sum != old_sum:
                raise ChecksumMismatch(
                    f"table {table} of {gen.schema} differs from {old.schema} at the same positions "
                    f"(checksum {new_sum} vs {old_sum}); readers stay on {old.schema}. The projection's apply "
                    "is not deterministic, or the live generation missed or doubled events: "
                    f"`agl projections rebuild --cancel {gen.projection}` drops the rebuilt one"
                )
        return checksums

    async def _drop_replaced(
        self, conn: psycopg.AsyncConnection[Any], gen: Generation, old: Generation | None, result: RebuildResult
    ) -> None:
        """Drop the replaced generation (unless kept for a rollback) and older retired ones, once unread."""
        cur = await conn.execute(
            "SELECT generation, version FROM projection_generations "
            "WHERE projection = %s AND state = 'retired' AND generation <> %s ORDER BY generation",
            (gen.projection, -1 if old is None or self.drop_old else old.generation),
        )
        stale = [Generation(gen.projection, int(g), int(v), "retired") for g, v in await cur.fetchall()]
        if not stale:
            return
        # A reader resolves the active schema at the start of its snapshot: one begun before the switch may still
        # read the replaced tables. DROP SCHEMA would wait for its locks, then fail its next statement (a 500).
        if not await wait_for_readers(conn, timeout_s=self.readers_drain_s):
            return  # kept; the next rebuild drops it
        for retired in stale:
            await drop_generation(conn, retired)
            result.dropped.append(retired)
