"""Zero-downtime rebuild: fill the next generation from offset 0 while readers use the current one, then switch.

1. ``begin_rebuild`` creates (or resumes) the *building* generation: its own schema, tables and positions.
2. A worker without a consumer group reads every partition from the building generation's stored positions and
   applies up to a target: the live generation's positions (or the high watermarks when there is none). It never
   applies past the target, so both generations stand on the same events when they are compared.
3. Once caught up, one transaction locks the live generation's position rows (its worker waits), checks the
   positions are equal (otherwise the target moves and step 2 continues), computes a checksum per table of both
   generations and switches readers. The live worker then sees its generation retired and follows the new one.

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

from consumers.worker import ProjectionWorker
from projections.errors import RebuildConflict
from projections.tracking import (
    Generation,
    TopicPartitionKey,
    activate,
    active_generation,
    begin_rebuild,
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


async def table_checksum(conn: psycopg.AsyncConnection[Any], schema: str, table: str) -> str:
    """Row count and an order-independent digest of every row's text."""
    query = sql.SQL(
        "SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), md5('')) FROM {}.{} t"
    ).format(sql.Identifier(schema), sql.Identifier(table))
    cur = await conn.execute(query)
    row = await cur.fetchone()
    assert row is not None
    return f"{row[0]}:{row[1]}"


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
    ) -> None:
        self.projection = projection
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.topic_prefix = topic_prefix
        self.batch_size = batch_size
        self.drop_old = drop_old
        self.on_progress = on_progress
        self._targets: dict[TopicPartitionKey, int] = {}
        self._positions: dict[TopicPartitionKey, int] = {}

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
            async with worker:
                assert worker.consumer is not None
                self._positions = await load_positions(conn, gen.schema)
                while not stop.is_set():
                    old = await active_generation(conn, self.projection.name)
                    await self._set_targets(conn, worker, old)
                    if worker.applied_total == 0:
                        started = time.monotonic()  # the rate counts applying, not connecting and planning
                    await self._catch_up(worker, stop, started)
                    if stop.is_set():
                        break
                    if await self._try_switch(conn, gen, old, result):
                        break
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
        return all(self._positions.get(tp, 0) >= target for tp, target in self._targets.items())

    async def _catch_up(self, worker: ProjectionWorker, stop: asyncio.Event, started: float) -> None:
        """Apply records below the targets; pause each partition as it reaches its target."""
        consumer = worker.consumer
        assert consumer is not None
        last_report = 0.0

        def below_target(tp: TopicPartition, records: list[Record]) -> slice:
            target = self._targets.get((tp.topic, tp.partition), 0)
            end = bisect.bisect_left(records, target, key=attrgetter("offset"))
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
        for (topic, partition), target in self._targets.items():
            if self._positions.get((topic, partition), 0) >= target:
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
        """Switch readers if the live generation still stands where we stopped; else move the target."""
        async with conn.transaction():
            if old is not None:
                live = await lock_positions(conn, old.schema, self._targets)
                if any(live.get(tp, 0) != target for tp, target in self._targets.items()):
                    return False  # the live worker moved on: catch up to its new positions first
            if await building_generation(conn, self.projection.name) != gen:
                raise RebuildConflict(f"{gen.schema} was cancelled while it was being built")
            for table in self.projection.tables:
                new_sum = await table_checksum(conn, gen.schema, table)
                old_sum = await table_checksum(conn, old.schema, table) if old is not None else None
                result.checksums[table] = (new_sum, old_sum)
            await activate(conn, gen, old)
        result.switched = True
        if old is not None and self.drop_old:
            await drop_generation(conn, old)
        return True
