"""The raw limit of ``bench/rebuild.py``: what the rollouts read model's rows cost with no framework, pipelined as
the engine is.

A background task fetches and decodes (``schemas.decode``) while the previous batch is in PostgreSQL; batches are
cut in time order across partitions (``consumers.alignment``, as the engine does, so an entity's events share a
batch); each batch is one transaction that COPYs its rows into staging tables, upserts them into ``rollouts`` and
``attempts`` (the projection's own tables, columns and indexes, from its migrations) and stores the positions.
Each row takes its columns straight from the batch's events: no read of stored rows, no fold, no position or key
locks, no dead letters, no generation check. Cyclic GC is paused and batches are freed in the background, as the
engine does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import astuple
from operator import attrgetter
from typing import Any, cast

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg import sql

from consumers._gc import Collections, gc_paused
from consumers.alignment import TimeAligned
from consumers.prefetch import release
from consumers.projection_consumer import FETCH_SETTINGS
from projections.base import Projection
from projections.rollouts import _ATTEMPT_COLS, _ROLLOUT_COLS, PROJECTION, AttemptRow, RolloutRow
from schemas import (
    AttemptFinished,
    AttemptHeartbeat,
    AttemptStarted,
    Event,
    RolloutCancelled,
    RolloutEnqueued,
    RolloutRequeued,
    RolloutTransitioned,
    decode,
)

#: Records decoded (or freed) between two yields to the event loop, as the engine does (``consumers.prefetch``).
SLICE = 100


async def consumer_of(
    bootstrap: str, prefix: str, batch: int, projection: Projection = PROJECTION
) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer holding every partition ``projection`` reads, configured as the engine's."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=batch,
        **FETCH_SETTINGS,
    )
    await consumer.start()
    cluster = await consumer._client.fetch_all_metadata()
    topics = projection.topic_names(prefix)
    tps = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
    consumer.assign(tps)
    return consumer, tps


# -- the raw limit ------------------------------------------------------------------------------------------------
RAW_SCHEMA = "bench_raw"
_R = {c: i for i, c in enumerate(_ROLLOUT_COLS)}
_A = {c: i for i, c in enumerate(_ATTEMPT_COLS)}
_ROLLOUT_DEFAULTS = list(astuple(RolloutRow("")))
_ATTEMPT_DEFAULTS = list(astuple(AttemptRow("", "")))
Rows = dict[str, list[Any]]


def raw_rows(events: Sequence[Event]) -> tuple[Rows, Rows]:
    """The rows a batch touches (a rollout row per rollout, an attempt row per attempt, as the fold writes), each
    column taken straight from the batch's events, the last event winning: no stored row is read."""
    rollouts: Rows = {}
    attempts: Rows = {}

    def rollout(rollout_id: str) -> list[Any]:
        row = rollouts.get(rollout_id)
        if row is None:
            row = rollouts[rollout_id] = _ROLLOUT_DEFAULTS.copy()
            row[0] = rollout_id
        return row

    def attempt(attempt_id: str, rollout_id: str) -> list[Any]:
        row = attempts.get(attempt_id)
        if row is None:
            row = attempts[attempt_id] = _ATTEMPT_DEFAULTS.copy()
            row[0], row[1] = attempt_id, rollout_id
        return row

    # Any: the events are those of the projection's types, told apart by type(); asserts would cost per event.
    for e in cast("Sequence[Any]", events):
        r = rollout(e.rollout_id)
        kind = type(e)
        if kind is RolloutTransitioned:
            r[_R["status"]], r[_R["decision_seq"]] = e.status, e.seq
            r[_R["attempt_count"]], r[_R["latest_attempt_id"]] = e.attempt_count, e.latest_attempt_id
            if e.attempt_id is not None:
                a = attempt(e.attempt_id, e.rollout_id)
                a[_A["status"]], a[_A["decision_seq"]] = e.attempt_status or a[_A["status"]], e.seq
                a[_A["late_reports"]], a[_A["sequence_id"]] = e.late_reports, e.attempt_sequence_id
                a[_A["worker_id"]] = e.worker_id
                if e.attempt_started_at is not None:  # v2 decisions carry what attempt.started/finished did
                    a[_A["start_time"]], a[_A["metadata"]] = e.attempt_started_at, "{}"
                if e.attempt_ended_at is not None:
                    a[_A["end_time"]] = e.attempt_ended_at
                    a[_A["error"]] = None if e.attempt_error is None else e.attempt_error.model_dump_json()
        elif kind is AttemptStarted:
            a = attempt(e.attempt_id, e.rollout_id)
            a[_A["sequence_id"]], a[_A["worker_id"]], a[_A["start_time"]] = e.sequence_id, e.worker_id, e.occurred_at
            a[_A["metadata"]] = orjson.dumps(e.metadata).decode()
        elif kind is AttemptHeartbeat:
            a = attempt(e.attempt_id, e.rollout_id)
            a[_A["last_heartbeat_time"]], a[_A["worker_id"]] = e.occurred_at, e.worker_id
        elif kind is AttemptFinished:
            a = attempt(e.attempt_id, e.rollout_id)
            a[_A["end_time"]] = e.occurred_at
            a[_A["error"]] = None if e.error is None else e.error.model_dump_json()
        elif kind is RolloutEnqueued:
            r[_R["enqueued"]], r[_R["input"]], r[_R["mode"]] = True, orjson.dumps(e.input).decode(), e.mode
            r[_R["resources_id"]], r[_R["priority"]], r[_R["enqueued_at"]] = e.resources_id, e.priority, e.occurred_at
            r[_R["config"]], r[_R["metadata"]] = e.config.model_dump_json(), orjson.dumps(e.metadata).decode()
        elif kind is RolloutCancelled:
            r[_R["cancelled_at"]] = e.occurred_at
        elif kind is RolloutRequeued:
            r[_R["requeued_after"]] = e.after_attempt_id
    return rollouts, attempts


def _copy_sql(table: str, cols: list[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(f"{table}_in"), sql.SQL(", ").join(map(sql.Identifier, cols))
    )


def _upsert_sql(table: str, cols: list[str]) -> sql.Composed:
    names = sql.SQL(", ").join(map(sql.Identifier, cols))
    return sql.SQL("INSERT INTO {}.{} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.Identifier(RAW_SCHEMA), sql.Identifier(table), names, names, sql.Identifier(f"{table}_in"),
        sql.Identifier(cols[0]),
        sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in cols[1:]),
    )  # fmt: skip


_WRITES = [
    (_copy_sql("rollouts", _ROLLOUT_COLS), _upsert_sql("rollouts", _ROLLOUT_COLS)),
    (_copy_sql("attempts", _ATTEMPT_COLS), _upsert_sql("attempts", _ATTEMPT_COLS)),
]
_SAVE_POSITION = (
    "UPDATE projection_offsets SET next_offset = %s, updated_at = now() "
    "WHERE projection = 'raw' AND topic = %s AND partition = %s"
)


async def create_raw_tables(conn: psycopg.AsyncConnection[Any], tps: list[TopicPartition]) -> None:
    """The projection's tables (its own migrations, so the same columns and indexes), staging tables for COPY,
    and position rows to update."""
    async with conn.transaction():
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(RAW_SCHEMA)))
        await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(RAW_SCHEMA)))
        for migration in PROJECTION.migrations:
            await conn.execute(migration.sql.encode())
    for table in ("rollouts", "attempts"):
        await conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {}.{}) ON COMMIT DELETE ROWS").format(
                sql.Identifier(f"{table}_in"), sql.Identifier(RAW_SCHEMA), sql.Identifier(table)
            )
        )
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES ('raw', %s, %s, 0)",
            [(tp.topic, tp.partition) for tp in tps],
        )


async def drop_raw_tables(conn: psycopg.AsyncConnection[Any]) -> None:
    # Not left for autovacuum to work through while the rebuild is measured.
    await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(RAW_SCHEMA)))
    await conn.execute("DELETE FROM projection_offsets WHERE projection = 'raw'")


async def write_batch(conn: psycopg.AsyncConnection[Any], records: Sequence[Any], events: Sequence[Event]) -> int:
    """One transaction: COPY the batch's rows, upsert them, store the positions. Returns the rows written."""
    tables = raw_rows(events)
    positions = {(r.topic, r.partition): r.offset + 1 for r in records}
    async with conn.transaction(), conn.cursor() as cur:
        for (copy_sql, upsert_sql), rows in zip(_WRITES, tables, strict=True):
            async with cur.copy(copy_sql) as copy:
                for row in rows.values():
                    await copy.write_row(row)
            await cur.execute(upsert_sql)
        await cur.executemany(_SAVE_POSITION, [(o, t, p) for (t, p), o in positions.items()])
    return sum(len(rows) for rows in tables)


class RawPump:
    """A background task fetches and decodes while the foreground writes the previous batch to PostgreSQL."""

    def __init__(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], batch: int) -> None:
        self.consumer = consumer
        self.tps = tps
        self.batch = batch
        self.aligned: TimeAligned[TopicPartition, Any, Event] = TimeAligned(attrgetter("timestamp"))
        self.fetched_to = dict.fromkeys(tps, 0)
        self.arrived = asyncio.Event()
        self.room = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def behind(self) -> set[TopicPartition]:
        """Partitions with records on the broker not fetched yet (or not known to have none)."""
        out = set()
        for tp in self.tps:
            high = self.consumer.highwater(tp)
            if high is None or self.fetched_to[tp] < high:
                out.add(tp)
        return out

    def buffered(self) -> int:
        return sum(self.aligned.size(tp) for tp in self.aligned.partitions())

    def _wanted(self) -> list[TopicPartition]:
        """Partitions holding the next batch back first; else any behind, while less than four batches wait."""
        behind = self.behind()
        empty = [tp for tp in behind if not self.aligned.size(tp)]
        if empty:
            return empty
        return sorted(behind) if self.buffered() < 4 * self.batch else []

    async def _fetch(self) -> None:
        try:
            while True:
                wanted = self._wanted()
                if not wanted:
                    if not self.behind():
                        return
                    self.room.clear()
                    await self.room.wait()
                    continue
                fetched = await self.consumer.getmany(*wanted, timeout_ms=500, max_records=self.batch)
                for tp, records in fetched.items():
                    events: list[Event] = []
                    for i in range(0, len(records), SLICE):  # a slice at a time, so the batch in flight goes on
                        events += [decode(r.value, r.headers) for r in records[i : i + SLICE]]
                        await asyncio.sleep(0)
                    self.aligned.add(tp, records, events)
                    self.fetched_to[tp] = records[-1].offset + 1
                self.arrived.set()
        finally:
            self.arrived.set()  # a failed fetch wakes the writer, which raises its error

    async def next_batch(self) -> tuple[list[Any], list[Event]] | None:
        """The next batch in time order across partitions, as the engine cuts them; ``None`` at the end."""
        if self.task is None:
            self.task = asyncio.create_task(self._fetch())
        while True:
            behind = self.behind()
            buffered = self.buffered()
            if buffered >= self.batch or (buffered and not behind):
                taken = self.aligned.take(self.batch, behind)
                if taken is not None:
                    self.room.set()
                    return taken
            if self.task.done():
                self.task.result()  # raises what stopped the fetch
                if not buffered:
                    return None
            self.arrived.clear()
            await self.arrived.wait()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def raw_limit(bootstrap: str, database_url: str, prefix: str, n: int, batch: int) -> float:
    """Events/s of the raw limit (see the module docstring) on the same records as the rebuild."""
    consumer, tps = await consumer_of(bootstrap, prefix, batch)
    pump = RawPump(consumer, tps, batch)
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await create_raw_tables(conn, tps)
            t0, done, rows = time.perf_counter(), 0, 0
            collections = Collections()
            releasing: asyncio.Task[None] | None = None
            with gc_paused():
                while (taken := await pump.next_batch()) is not None:
                    rows += await write_batch(conn, *taken)
                    done += len(taken[0])
                    if releasing is not None:
                        await releasing
                    releasing = asyncio.create_task(release(*taken))  # freed while the next batch is written
                    del taken
                    collections.between_batches()
                if releasing is not None:
                    await releasing
            elapsed = time.perf_counter() - t0
            await drop_raw_tables(conn)
    finally:
        await pump.close()
        await consumer.stop()
    assert done == n, f"the raw limit read {done} records, not {n}"
    print(f"raw: {rows / n:.2f} rows written per event", flush=True)
    return n / elapsed
