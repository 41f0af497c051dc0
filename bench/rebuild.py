"""Rebuild of the rollouts read model from N events on the broker, beside the raw limit measured in the same run.

Raw limit: consume -> decode to typed events -> COPY -> position upsert, one transaction per batch, no framework
(see ``raw_limit`` for exactly what it includes).
Rebuild: ``consumers.rebuild.Rebuild`` (positions locked and stored per batch, event-id dedupe, the rollouts fold).

    .venv/bin/python bench/rebuild.py --events 100000 [--chaos 5] [--broker kafka|tansu]

Starts Apache Kafka (or Tansu) and PostgreSQL on free ports in a temporary directory unless AGL_KAFKA_BOOTSTRAP
and AGL_DATABASE_URL are set. With ``--chaos K`` the rebuild runs as ``agl projections rebuild`` in a subprocess
killed with SIGKILL K times at random moments, then resumed to the end, and the result is checked against an
in-memory fold of the same events. Last line: ``rebuild_eps=<n> raw_eps=<n> ratio=<rebuild/raw>``.
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
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import astuple
from pathlib import Path
from typing import Any, cast

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agl.stack._process import free_port
from agl.stack.brokers import ApacheKafka, Tansu, java_available
from agl.stack.postgres import EmbeddedPostgres
from consumers._gc import gc_paused
from consumers.rebuild import Rebuild
from consumers.worker import FETCH_SETTINGS
from producers.admin import ensure_topics
from projections.migrations import migrate_core
from projections.rollouts import _ATTEMPT_COLS, _ROLLOUT_COLS, PROJECTION, RolloutEvent, State, fold_all
from schemas import (
    TOPIC_BY_EVENT,
    AttemptFinished,
    AttemptHeartbeat,
    AttemptStarted,
    RolloutEnqueued,
    decode,
    encode,
)
from schemas.topics import TOPICS

REPO = Path(__file__).resolve().parents[1]


def make_events(n: int) -> list[Any]:
    events = []
    for i in range((n + 3) // 4):
        rid, aid = f"ro-{i:07d}", f"at-{i:07d}-1"
        events += [
            RolloutEnqueued(rollout_id=rid, input={"question": f"q{i}", "n": i}, mode="train"),
            AttemptStarted(rollout_id=rid, attempt_id=aid, sequence_id=1, worker_id=f"w{i % 8}"),
            AttemptHeartbeat(rollout_id=rid, attempt_id=aid, worker_id=f"w{i % 8}"),
            AttemptFinished(rollout_id=rid, attempt_id=aid, status="succeeded" if i % 7 else "failed"),
        ]
    return events[:n]


@contextlib.asynccontextmanager
async def stack(broker: str) -> AsyncIterator[tuple[str, str]]:
    if os.environ.get("AGL_KAFKA_BOOTSTRAP") and os.environ.get("AGL_DATABASE_URL"):
        yield os.environ["AGL_KAFKA_BOOTSTRAP"], os.environ["AGL_DATABASE_URL"]
        return
    with tempfile.TemporaryDirectory(prefix="agl-bench-") as tmp:
        root = Path(tmp)
        kafka: ApacheKafka | Tansu
        if broker == "kafka":
            libs = REPO / ".agl" / "cache" / "kafka-4.1.2"
            kafka = ApacheKafka(data_dir=root / "kafka", libs_dir=libs, port=free_port(), controller_port=free_port())
        else:
            kafka = Tansu(data_dir=root / "tansu", port=free_port())
        pg = EmbeddedPostgres(data_dir=root / "pg" / "data", port=free_port(), durable=False)
        await asyncio.gather(kafka.start(120), pg.start(60))
        try:
            yield kafka.info.bootstrap, pg.url()
        finally:
            await asyncio.gather(kafka.stop(), pg.stop())


async def produce(bootstrap: str, prefix: str, events: list[Any]) -> None:
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


async def raw_limit(bootstrap: str, database_url: str, prefix: str, n: int, batch: int) -> float:
    """The physical limit of a projection on this machine, measured on the same records as the rebuild.

    Per batch: consume (the same consumer fetch settings as the engine), decode every record into its typed
    event with ``schemas.decode`` (the engine's own decoder, fast path included: same work per event), COPY one
    row per event (rollout id, type, JSON payload) and upsert the positions, all in one transaction. No
    framework: no position locks, no dedupe, no fold, no dead letters. Cyclic GC is paused per batch, as the
    engine does, so the limit is not understated.
    """
    topics = [t.full_name(prefix) for t in PROJECTION.topics]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", **FETCH_SETTINGS
    )
    await consumer.start()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE raw_events (rollout_id text, type text, payload jsonb)")
        cluster = await consumer._client.fetch_all_metadata()
        consumer.assign([TopicPartition(t, p) for t in topics for p in cluster.partitions_for_topic(t)])
        t0, done = time.perf_counter(), 0
        while done < n:
            records = [r for rs in (await consumer.getmany(timeout_ms=1000, max_records=batch)).values() for r in rs]
            with gc_paused():
                async with conn.transaction():
                    async with conn.cursor() as cur, cur.copy("COPY raw_events FROM STDIN") as copy:
                        for r in records:
                            event = decode(r.value, r.headers)
                            await copy.write_row((cast("RolloutEvent", event).rollout_id, event.type, r.value.decode()))
                    last = {(r.topic, r.partition): r.offset + 1 for r in records}
                    async with conn.cursor() as cur:
                        await cur.executemany(
                            "INSERT INTO projection_offsets (projection, topic, partition, next_offset) "
                            "VALUES ('raw', %s, %s, %s) ON CONFLICT (projection, topic, partition) "
                            "DO UPDATE SET next_offset = EXCLUDED.next_offset",
                            [(t, p, o) for (t, p), o in last.items()],
                        )
            done += len(records)
        elapsed = time.perf_counter() - t0
        # Not left for autovacuum to work through while the rebuild is measured.
        await conn.execute("DROP TABLE raw_events")
        await conn.execute("DELETE FROM projection_offsets WHERE projection = 'raw'")
    await consumer.stop()
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


async def verify(database_url: str, events: list[Any]) -> None:
    state = State({}, {})
    fold_all(state, events)
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
    events = make_events(args.events)
    async with stack(broker) as (bootstrap, database_url):
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        await ensure_topics(bootstrap, TOPICS, prefix=prefix)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await migrate_core(conn)
        t0 = time.perf_counter()
        await produce(bootstrap, prefix, events)
        print(f"broker={broker} events={len(events)} produced in {time.perf_counter() - t0:.1f}s", flush=True)
        # The events stay in memory for the verification. A worker process does not hold them: frozen, they are
        # left out of the collections of the code measured below (raw and rebuild alike).
        gc.collect()
        gc.freeze()
        await quiesce(database_url)
        raw = await raw_limit(bootstrap, database_url, prefix, len(events), args.batch_size)
        print(f"raw: {raw:,.0f} events/s", flush=True)
        if args.chaos:
            await chaos(bootstrap, database_url, prefix, args.chaos, args.batch_size)
        await quiesce(database_url)
        rebuild = Rebuild(PROJECTION, bootstrap=bootstrap, database_url=database_url, topic_prefix=prefix,
                          batch_size=args.batch_size)  # fmt: skip
        result = await rebuild.run(asyncio.Event())
        # With chaos, part of the work happened in the killed runs; the rate is that of the final run.
        eps = result.events / result.seconds if result.seconds else 0.0
        print(f"rebuild: {result.events} events applied in {result.seconds:.1f}s (resumed={result.resumed})")
        if args.chaos:
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
