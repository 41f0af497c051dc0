"""Rebuild of the triplet read model from N spans on the broker, beside the raw limit measured in the same run.

Workload: attempts of ten spans each, as an agent traced through the LLM proxy leaves them: an agent span (the
root), four LLM calls (``openai.chat.completion`` with the GenAI attributes, a prompt of 256 token ids and a
response of 64, and their messages), four tool spans and one reward annotation (Agent Lightning's v0.3 encoding),
plus one ``reward.assigned`` per attempt and the rollout's ``rollout.enqueued`` (its mode). So a million spans
make 100,000 attempts and 400,000 triplets.

Raw limit (``raw_limit``): the same records consumed, decoded (``schemas.decode``) and COPYed into one table per
event kind, one transaction per batch storing the positions, pipelined as the engine is (``bench/rebuild.py``'s
``RawPump``): no tree, no matching, no triplet rows. Rebuild: ``consumers.rebuild.Rebuild`` of the ``triplets``
projection (positions, per-key locks, the adapter, the triplet rows, the checksum and the switch).

    .venv/bin/python bench/triplets.py --spans 1000000 [--broker kafka|tansu]

Starts Apache Kafka (or Tansu) and PostgreSQL on free ports unless AGL_KAFKA_BOOTSTRAP and AGL_DATABASE_URL are
set. Last line: ``rebuild_eps=<events/s> raw_eps=<events/s> ratio=<rebuild/raw>``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiokafka import TopicPartition
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agl.stack.brokers import java_available
from bench._rebuild_raw import RawPump, consumer_of
from bench._stack import prepared_services
from bench.rebuild import produce, quiesce, warm_read
from consumers._gc import Collections, gc_paused
from consumers.prefetch import release
from consumers.rebuild import Progress, Rebuild
from projections.triplets import PROJECTION
from schemas import Event, RewardAssigned, RolloutEnqueued, SpanRecorded

SPANS_PER_ATTEMPT = 10
CALLS_PER_ATTEMPT = 4
PROMPT_TOKENS = 256
RESPONSE_TOKENS = 64
T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- workload ---------------------------------------------------------------------------------------------------
def attempt_events(i: int, rng: random.Random) -> list[Event]:
    """Rollout ``i``: its enqueue, one attempt's ten spans and its reward (built without validation: fast)."""
    rollout_id, attempt_id = f"ro-{i:08x}", f"at-{i:08x}"
    trace_id = f"{i:032x}"
    start = T0 + timedelta(seconds=i)
    ids = iter(range(1, 100))

    def span(name: str, t: float, length: float, parent: str | None, attributes: dict[str, Any]) -> SpanRecorded:
        n = next(ids)
        return SpanRecorded.model_construct(
            event_id=uuid.UUID(int=(i << 16) | n, version=4),
            occurred_at=start,
            source="bench",
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            sequence_id=n,
            trace_id=trace_id,
            span_id=f"{(i << 8) | n:016x}",
            parent_id=parent,
            name=name,
            start_time=start + timedelta(seconds=t),
            end_time=start + timedelta(seconds=t + length),
            attributes=attributes,
        )

    root = span("agent.run", 0.0, 9.0, None, {"agent.name": "bench"})
    events: list[Event] = [
        RolloutEnqueued.model_construct(
            event_id=uuid.UUID(int=(i << 16), version=4),
            occurred_at=start,
            source="bench",
            rollout_id=rollout_id,
            input={"question": f"q{i}"},
            mode="train",
        ),
        root,
    ]
    for c in range(CALLS_PER_ATTEMPT):
        t = 2.0 * c
        prompt = [rng.randrange(49152) for _ in range(PROMPT_TOKENS)]
        response = [rng.randrange(49152) for _ in range(RESPONSE_TOKENS)]
        events.append(
            span(
                "openai.chat.completion",
                t,
                1.0,
                root.span_id,
                {
                    "gen_ai.system": "openai",
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "bench",
                    "gen_ai.response.id": f"chatcmpl-{i:x}-{c}",
                    "gen_ai.prompt.0.role": "user",
                    "gen_ai.prompt.0.content": f"question {i} turn {c}",
                    "gen_ai.completion.0.role": "assistant",
                    "gen_ai.completion.0.content": f"answer {c}",
                    "gen_ai.usage.input_tokens": PROMPT_TOKENS,
                    "gen_ai.usage.output_tokens": RESPONSE_TOKENS,
                    "prompt_token_ids": prompt,
                    "response_token_ids": response,
                },
            )
        )
        events.append(span("tool.call", t + 1.2, 0.5, root.span_id, {"tool.name": "calculator"}))
    annotation = span("agentlightning.annotation", 8.5, 0.0, root.span_id, {
        "agentlightning.reward.0.name": "reward", "agentlightning.reward.0.value": rng.random(),
    })  # fmt: skip
    events.append(annotation)
    events.append(
        RewardAssigned.model_construct(
            event_id=uuid.UUID(int=(i << 16) | 0xFFFF, version=4),
            occurred_at=start + timedelta(seconds=9),
            source="bench",
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            value=1.0,
            name="reward",
            dimensions={},
            span_id=annotation.span_id,  # the annotation's mirror, as agl.emit_reward writes it
            response_id=None,
        )
    )
    return events


def make_events(spans: int) -> list[Event]:
    rng = random.Random(7)
    events: list[Event] = []
    for i in range(max(1, spans // SPANS_PER_ATTEMPT)):
        events += attempt_events(i, rng)
    return events


# -- the raw limit ------------------------------------------------------------------------------------------------
RAW_SCHEMA = "bench_raw_triplets"
_TABLES = {
    "spans": "rollout_id text, attempt_id text, span_id text, sequence_id bigint, trace_id text, parent_id text, "
    "name text, start_time timestamptz, end_time timestamptz, attributes jsonb",
    "rewards": "event_id uuid, rollout_id text, attempt_id text, value float8, span_id text, response_id text",
    "rollouts": "rollout_id text, mode text, resources_id text",
}


def raw_rows(events: Sequence[Event]) -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _TABLES}
    for e in events:
        if isinstance(e, SpanRecorded):
            rows["spans"].append((e.rollout_id, e.attempt_id, e.span_id, e.sequence_id, e.trace_id, e.parent_id,
                                  e.name, e.start_time, e.end_time, orjson.dumps(e.attributes).decode()))  # fmt: skip
        elif isinstance(e, RewardAssigned):
            rows["rewards"].append((e.event_id, e.rollout_id, e.attempt_id, e.value, e.span_id, e.response_id))
        elif isinstance(e, RolloutEnqueued):
            rows["rollouts"].append((e.rollout_id, e.mode, e.resources_id))
    return rows


async def raw_limit(bootstrap: str, database_url: str, prefix: str, n: int, batch: int) -> float:
    """Events/s of consume + decode + COPY of the same records, one transaction per batch with its positions."""
    consumer, tps = await consumer_of(bootstrap, prefix, batch, PROJECTION)
    pump = RawPump(consumer, tps, batch)
    done = 0
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await _create_raw(conn, tps)
            t0 = time.perf_counter()
            collections = Collections()
            with gc_paused():
                while (taken := await pump.next_batch()) is not None:
                    records, events = taken
                    await _write(conn, records, events)
                    done += len(records)
                    await release(*taken)
                    del taken, records, events
                    collections.between_batches()
            elapsed = time.perf_counter() - t0
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(RAW_SCHEMA)))
            await conn.execute("DELETE FROM projection_offsets WHERE projection = 'raw'")
    finally:
        await pump.close()
        await consumer.stop()
    assert done == n, f"the raw limit read {done} records, not {n}"
    return n / elapsed


async def _create_raw(conn: psycopg.AsyncConnection[Any], tps: list[TopicPartition]) -> None:
    await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(RAW_SCHEMA)))
    for table, columns in _TABLES.items():
        await conn.execute(
            sql.SQL("CREATE TABLE {}.{} ({})").format(
                sql.Identifier(RAW_SCHEMA), sql.Identifier(table), sql.SQL(columns)
            )
        )
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES ('raw', %s, %s, 0)",
            [(tp.topic, tp.partition) for tp in tps],
        )


async def _write(conn: psycopg.AsyncConnection[Any], records: Sequence[Any], events: Sequence[Event]) -> None:
    positions = {(r.topic, r.partition): r.offset + 1 for r in records}
    async with conn.transaction(), conn.cursor() as cur:
        for table, rows in raw_rows(events).items():
            if not rows:
                continue
            copy_sql = sql.SQL("COPY {}.{} FROM STDIN").format(sql.Identifier(RAW_SCHEMA), sql.Identifier(table))
            async with cur.copy(copy_sql) as copy:
                for row in rows:
                    await copy.write_row(row)
        await cur.executemany(
            "UPDATE projection_offsets SET next_offset = %s WHERE projection = 'raw' AND topic = %s AND partition = %s",
            [(o, t, p) for (t, p), o in positions.items()],
        )


# -- checks -------------------------------------------------------------------------------------------------------
async def verify(database_url: str, attempts: int) -> None:
    """The active generation holds four triplets per attempt, each with its token ids, the rewarded ones matched."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT schema_name FROM projection_generations WHERE projection = %s AND state = 'active'",
            (PROJECTION.name,),
        )
        row = await cur.fetchone()
        assert row is not None, "no active generation of the triplet projection"
        query = sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE reward IS NOT NULL), "
            "min(cardinality(prompt_token_ids)), min(cardinality(response_token_ids)) FROM {}.triplets"
        ).format(sql.Identifier(row[0]))
        got = await (await conn.execute(query)).fetchone()
    assert got is not None
    total, rewarded, prompt_min, response_min = got
    print(f"verify: {total} triplets, {rewarded} rewarded, token ids >= {prompt_min}/{response_min}", flush=True)
    want = attempts * CALLS_PER_ATTEMPT
    if total != want or rewarded != attempts or prompt_min != PROMPT_TOKENS or response_min != RESPONSE_TOKENS:
        raise SystemExit(f"expected {want} triplets, {attempts} rewarded, full token ids")


async def main_async(args: argparse.Namespace) -> None:
    broker = args.broker or ("kafka" if java_available() else "tansu")
    t0 = time.perf_counter()
    events = make_events(args.spans)
    attempts = max(1, args.spans // SPANS_PER_ATTEMPT)
    print(f"workload: {len(events)} events ({attempts * SPANS_PER_ATTEMPT} spans) in {time.perf_counter() - t0:.1f}s",
          flush=True)  # fmt: skip
    async with prepared_services(broker) as ready:
        bootstrap, database_url, prefix = ready.bootstrap, ready.database_url, ready.prefix
        t0 = time.perf_counter()
        await produce(bootstrap, prefix, events)
        print(f"broker={broker} events={len(events)} produced in {time.perf_counter() - t0:.1f}s", flush=True)
        n = len(events)
        del events
        gc.collect()
        await warm_read(bootstrap, prefix, n, args.batch_size, PROJECTION)
        await quiesce(database_url)
        raw = await raw_limit(bootstrap, database_url, prefix, n, args.batch_size)
        print(f"raw: {raw:,.0f} events/s", flush=True)
        await quiesce(database_url)
        progress: list[Progress] = []
        rebuild = Rebuild(PROJECTION, bootstrap=bootstrap, database_url=database_url, topic_prefix=prefix,
                          batch_size=args.batch_size, on_progress=progress.append)  # fmt: skip
        result = await rebuild.run(asyncio.Event())
        eps = result.events / result.seconds if result.seconds else 0.0
        print(f"rebuild: {result.events} events in {result.seconds:.1f}s", flush=True)
        await verify(database_url, attempts)
        print(f"rebuild_eps={eps:.0f} raw_eps={raw:.0f} ratio={eps / raw:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--broker", choices=["kafka", "tansu"], default=None)
    parser.add_argument("--batch-size", type=int, default=5000)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
