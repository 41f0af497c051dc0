"""Rebuild of the rollouts read model from N events on the broker, beside the raw limit measured in the same run.

Workload: rollout histories decided by the real lifecycle decider (``tests/fixtures/histories.py``), so the
statuses come from ``rollout.transitioned`` decisions as on a running stack. A tenth of the rollouts each fail
once and are retried, time out and are retried, are cancelled while running, or fail three times: every event
type of the projection occurs (enqueued, transitioned, requeued, cancelled, attempt started, heartbeat,
finished), late reports included. The projection applies all of them idempotently, so the engine keeps no
event-id ledger for it and none is measured.

Raw limit (``raw_limit``): what the same rows cost with no framework, pipelined as the engine is. A background
task fetches and decodes (``schemas.decode``) while the previous batch is in PostgreSQL; batches are cut in time
order across partitions (``consumers.alignment``, as the engine does, so an entity's events share a batch); each
batch is one transaction that COPYs its rows into staging tables, upserts them into ``rollouts`` and ``attempts``
(the projection's own tables, columns and indexes, from its migrations) and stores the positions. Each row
takes its columns straight from the batch's events: no read of stored rows, no fold, no position or key locks,
no dead letters, no generation check. Cyclic GC is paused and batches are freed in the background, as the engine
does.

Rebuild: ``consumers.rebuild.Rebuild`` (positions locked and stored per batch, per-key locks, the rollouts fold,
and the checksum and switch at the end, which its rate includes).

Both are measured after an untimed read of the whole log (broker pages and decoding warm for both), each after a
checkpoint and a sync, with the clock started once connected. The rebuilt read model is then compared with the
reference fold (``projections.rollouts.fold_all``) of the same events.

    .venv/bin/python bench/rebuild.py --events 500000 [--chaos 5] [--broker kafka|tansu]

Starts Apache Kafka (or Tansu) and PostgreSQL on free ports in a temporary directory unless AGL_KAFKA_BOOTSTRAP
and AGL_DATABASE_URL are set. With ``--chaos K`` the rebuild runs as ``agl projections rebuild`` in a subprocess
killed with SIGKILL K times at random moments, then resumed to the end. Last line:
``rebuild_eps=<n> raw_eps=<n> ratio=<rebuild/raw>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import astuple
from operator import attrgetter
from pathlib import Path
from typing import Any, cast

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agl.stack.brokers import java_available
from bench._stack import prepared_services
from consumers._gc import Collections, gc_paused
from consumers.alignment import TimeAligned
from consumers.prefetch import release
from consumers.rebuild import Progress, Rebuild
from consumers.worker import FETCH_SETTINGS
from projections.base import Projection
from projections.rollouts import _ATTEMPT_COLS, _ROLLOUT_COLS, PROJECTION, AttemptRow, RolloutRow, State, fold_all
from schemas import (
    TOPIC_BY_EVENT,
    AttemptFinished,
    AttemptHeartbeat,
    AttemptStarted,
    Event,
    RolloutCancelled,
    RolloutConfig,
    RolloutEnqueued,
    RolloutRequeued,
    RolloutTransitioned,
    decode,
    encode,
)
from tests.fixtures.histories import History, history

REPO = Path(__file__).resolve().parents[1]
#: Retried on failure, timeout and unresponsiveness, up to three attempts.
RETRY = RolloutConfig(max_attempts=3, retry_condition=("failed", "timeout", "unresponsive"))
#: Records decoded (or freed) between two yields to the event loop, as the engine does (``consumers.prefetch``).
SLICE = 100


# -- workload ---------------------------------------------------------------------------------------------------
def rollout_history(i: int) -> History:
    """Rollout ``i``'s history: six in ten succeed at once, the others each take one of four harder paths."""
    h = history(f"ro-{i:07d}", RETRY, t=float(i), input={"question": f"q{i}", "n": i}, mode="train")
    w = f"w{i % 8}"
    kind = i % 10
    if kind == 6:  # fails, is requeued, succeeds
        h.claim(w).running().heartbeat().finish("failed").claim(w).running().heartbeat().finish()
    elif kind == 7:  # times out (its late heartbeat changes nothing), is requeued, succeeds
        h.claim(w).running().expire("timeout").heartbeat().claim(w).running().heartbeat().finish()
    elif kind == 8:  # cancelled while running
        h.claim(w).running().heartbeat().cancel("bench")
    elif kind == 9:  # fails, goes unresponsive, fails: out of attempts
        h.claim(w).running().finish("failed").claim(w).running().expire("unresponsive")
        h.claim(w).running().finish("failed")
    else:
        h.claim(w).running().heartbeat().finish()
    return h


def make_events(n: int) -> list[Event]:
    """The first ``n`` events of rollout histories, one rollout after the other (the last may be cut short)."""
    events: list[Event] = []
    i = 0
    while len(events) < n:
        events += rollout_history(i).events
        i += 1
    return events[:n]


async def produce(bootstrap: str, prefix: str, events: list[Event]) -> None:
    async with AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024, compression_type="lz4"
    ) as producer:
        pending = []
        for event in events:
            value, headers = encode(event)
            topic = TOPIC_BY_EVENT[type(event)].full_name(prefix)
            pending.append(await producer.send(topic, value, key=event.key(), headers=headers))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)


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


async def warm_read(bootstrap: str, prefix: str, n: int, batch: int, projection: Projection = PROJECTION) -> None:
    """Read the whole log once, untimed, decoding its first batch: both measured phases then find the broker's
    pages in memory and the decoder warm, whichever runs first."""
    consumer, _ = await consumer_of(bootstrap, prefix, batch, projection)
    try:
        seen = 0
        while seen < n:
            records = [r for rs in (await consumer.getmany(timeout_ms=1000)).values() for r in rs]
            if seen == 0:
                for r in records[:batch]:
                    decode(r.value, r.headers)
            seen += len(records)
    finally:
        await consumer.stop()


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


async def quiesce(database_url: str) -> None:
    """Write out what the previous phase left dirty (PostgreSQL's buffers, then the kernel's page cache), so its
    writeback does not compete with the next measured phase for the same two cores."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("CHECKPOINT")
    await asyncio.to_thread(os.sync)


async def chaos(bootstrap: str, database_url: str, prefix: str, kills: int, batch: int) -> None:
    env = dict(os.environ, AGL_KAFKA_BOOTSTRAP=bootstrap, AGL_DATABASE_URL=database_url, AGL_TOPIC_PREFIX=prefix)
    argv = [sys.executable, "-m", "agl", "projections", "rebuild", "rollouts", "--batch-size", str(batch)]
    rng = random.Random(1)
    for k in range(kills):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        print(f"chaos: kill {k + 1}/{kills} (exit {proc.returncode})", flush=True)


async def verify(database_url: str, events: list[Event]) -> None:
    """The active generation's rows equal the reference fold of ``events``, row for row."""
    state = State({}, {})
    fold_all(state, events)  # type: ignore[arg-type]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT schema_name FROM projection_generations WHERE projection = 'rollouts' AND state = 'active'"
        )
        row = await cur.fetchone()
        assert row is not None, "no active generation of rollouts"
        schema = row[0]
        got = await (await conn.execute(f"SELECT {', '.join(_ROLLOUT_COLS)} FROM {schema}.rollouts")).fetchall()  # noqa: S608
        got_a = await (await conn.execute(f"SELECT {', '.join(_ATTEMPT_COLS)} FROM {schema}.attempts")).fetchall()  # noqa: S608
    want = sorted(astuple(r) for r in state.rollouts.values())
    want_a = sorted(astuple(a) for a in state.attempts.values())
    ok = sorted(got) == want and sorted(got_a) == want_a
    print(f"verify: {len(got)} rollouts, {len(got_a)} attempts; equal to the reference fold: {ok}", flush=True)
    if not ok:
        raise SystemExit("the rebuilt read model differs from the reference fold")


async def main_async(args: argparse.Namespace) -> None:
    broker = args.broker or ("kafka" if java_available() else "tansu")
    t0 = time.perf_counter()
    events = make_events(args.events)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(Counter(e.type for e in events).items()))
    print(f"workload: {len(events)} events in {time.perf_counter() - t0:.1f}s ({kinds})", flush=True)
    async with prepared_services(broker) as ready:
        bootstrap, database_url, prefix = ready.bootstrap, ready.database_url, ready.prefix
        t0 = time.perf_counter()
        await produce(bootstrap, prefix, events)
        print(f"broker={broker} events={len(events)} produced in {time.perf_counter() - t0:.1f}s", flush=True)
        # The events stay in memory for the verification. A worker process does not hold them: frozen, they are
        # left out of the collections of the code measured below (raw and rebuild alike).
        gc.collect()
        gc.freeze()
        await warm_read(bootstrap, prefix, len(events), args.batch_size)
        await quiesce(database_url)
        raw = await raw_limit(bootstrap, database_url, prefix, len(events), args.batch_size)
        print(f"raw: {raw:,.0f} events/s", flush=True)
        if args.chaos:
            await chaos(bootstrap, database_url, prefix, args.chaos, args.batch_size)
        await quiesce(database_url)
        caught_up: list[Progress] = []
        rebuild = Rebuild(PROJECTION, bootstrap=bootstrap, database_url=database_url, topic_prefix=prefix,
                          batch_size=args.batch_size, on_progress=caught_up.append)  # fmt: skip
        result = await rebuild.run(asyncio.Event())
        # With chaos, part of the work happened in the killed runs; the rate is that of the final run.
        eps = result.events / result.seconds if result.seconds else 0.0
        print(
            f"rebuild: {result.events} events applied in {result.seconds:.1f}s (resumed={result.resumed}); "
            f"{caught_up[-1].events_per_s:,.0f} events/s until caught up, before the checksums and the switch",
            flush=True,
        )
        await verify(database_url, events)
        print(f"rebuild_eps={eps:.0f} raw_eps={raw:.0f} ratio={eps / raw:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--chaos", type=int, default=0, metavar="K", help="kill the rebuild K times, then verify")
    parser.add_argument("--broker", choices=["kafka", "tansu"], default=None)
    parser.add_argument("--batch-size", type=int, default=5000)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
