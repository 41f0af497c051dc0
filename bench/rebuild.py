"""Rebuild of the rollouts read model from N events on the broker, beside the raw limit measured in the same run.

Workload: rollout histories decided by the real lifecycle decider (``tests/fixtures/histories.py``), so the
statuses come from ``rollout.transitioned`` decisions as on a running stack. A tenth of the rollouts each fail
once and are retried, time out and are retried, are cancelled while running, or fail three times: every event
type the decider writes occurs (enqueued, transitioned with the attempts' starts and ends, requeued, cancelled,
heartbeat), late reports included; attempt.started and attempt.finished, which only logs written before
rollout.transitioned v2 hold, do not. The projection applies all of them idempotently, so the engine keeps no
event-id ledger for it and none is measured.

Raw limit (``raw_limit``, in ``bench/_rebuild_raw.py``): what the same rows cost with no framework, pipelined as
the engine is: the same fetching, decoding and batching, then each batch COPYed and upserted into the
projection's own tables with its positions, with no read of stored rows, no fold, no locks and no checks.

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
import gc
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import astuple
from pathlib import Path

import psycopg
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agl.stack.brokers import java_available
from bench._rebuild_raw import consumer_of, raw_limit
from bench._stack import prepared_services
from consumers.rebuild import Progress, Rebuild
from projections.base import Projection
from projections.rollouts import _ATTEMPT_COLS, _ROLLOUT_COLS, PROJECTION, State, fold_all
from schemas import (
    TOPIC_BY_EVENT,
    Event,
    RolloutConfig,
    decode,
    encode,
)
from tests.fixtures.histories import History, history

REPO = Path(__file__).resolve().parents[1]
#: Retried on failure, timeout and unresponsiveness, up to three attempts.
RETRY = RolloutConfig(max_attempts=3, retry_condition=("failed", "timeout", "unresponsive"))


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
