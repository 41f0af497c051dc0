"""Claims from a queue whose index fills with the entries of claimed rollouts: the claim's own plan (a walk of the
queue's index in its order, ``producers.lifecycle._QUEUE_ORDER_SCAN``) beside PostgreSQL's choice for the same
select, alternating rounds.

Each round: ``--queued`` rollouts in the write model as an enqueue leaves them (then ANALYZE), claimed ``--limit``
at a time by ``producers.lifecycle.claim`` until none is left. Autovacuum is off for the table, as between two of
its visits (at its defaults it comes once a minute at most, and to a large table once a fifth of it changed). Per
claim: wall time, the mean over the round and over its last tenth. The connection's session is the API's
(``core.pg_session``: each execution planned with its values). PostgreSQL is started here without fsync unless
AGL_DATABASE_URL points at a server; the bench works in a database of its own, dropped at the end.

    .venv/bin/python bench/claim_scan.py [--queued 20000] [--limit 100] [--rounds 2]

Last line: ``ours_ms=<mean> planner_ms=<mean> ours_last_ms=<mean of the last tenth> planner_last_ms=<...>
speedup=<planner/ours>`` (means over the rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import database as bench_database
from core.pg_session import configure_session
from producers import lifecycle
from producers.idempotency import migrate_commands
from producers.publisher import EventPublisher

OURS = lifecycle._QUEUE_ORDER_SCAN


@contextlib.asynccontextmanager
async def own_database() -> AsyncIterator[str]:
    """A database of the bench's own, on AGL_DATABASE_URL's server or on one started here."""
    with tempfile.TemporaryDirectory(prefix="agl-bench-") as tmp:
        async with bench_database(Path(tmp)) as url:
            name = f"agl_bench_claim_{uuid.uuid4().hex[:8]}"
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
                await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            try:
                yield make_conninfo(url, dbname=name)
            finally:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
                    await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def claim_round(
    conn: psycopg.AsyncConnection[Any], publisher: EventPublisher, queued: int, limit: int, ours: bool
) -> list[float]:
    """Seconds per claim, from a queue of ``queued`` rollouts until it is empty."""
    await conn.execute("TRUNCATE lifecycle_rollouts, lifecycle_attempts, outbox")
    await conn.execute(
        "INSERT INTO lifecycle_rollouts (rollout_id, status, config, input)"
        " SELECT 'ro-' || g, 'queuing', '{}', '{\"question\": \"q\"}' FROM generate_series(1, %s) g",
        (queued,),
    )
    await conn.execute("ANALYZE lifecycle_rollouts")
    # The module reads it at each claim: "SELECT 1" leaves the plan to PostgreSQL.
    lifecycle._QUEUE_ORDER_SCAN = OURS if ours else "SELECT 1"
    times: list[float] = []
    try:
        while True:
            started = time.perf_counter()
            got = await lifecycle.claim(
                conn, publisher, worker_id="bench", capabilities=[], limit=limit, envelope={"source": "bench"}
            )
            if not got.claims:
                return times
            times.append(time.perf_counter() - started)
    finally:
        lifecycle._QUEUE_ORDER_SCAN = OURS


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queued", type=int, default=20_000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    publisher = EventPublisher("unused:9092")  # encodes records only
    figures: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    async with own_database() as url, await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await configure_session(conn)  # as the API's connections are
        await migrate_commands(conn)
        await conn.execute("ALTER TABLE lifecycle_rollouts SET (autovacuum_enabled = off)")
        for round_ in range(args.rounds):
            for ours in (False, True):
                times = await claim_round(conn, publisher, args.queued, args.limit, ours)
                tenth = times[-max(1, len(times) // 10) :]
                mean, last = statistics.fmean(times) * 1000, statistics.fmean(tenth) * 1000
                figures[ours].append((mean, last))
                kind = "ours" if ours else "planner's"
                print(
                    f"round {round_ + 1}, {kind}: {len(times)} claims, {mean:.2f} ms each, {last:.2f} ms the last tenth"
                )
    ours_mean, ours_last = (statistics.fmean(f[i] for f in figures[True]) for i in (0, 1))
    theirs_mean, theirs_last = (statistics.fmean(f[i] for f in figures[False]) for i in (0, 1))
    print(
        f"ours_ms={ours_mean:.2f} planner_ms={theirs_mean:.2f} ours_last_ms={ours_last:.2f} "
        f"planner_last_ms={theirs_last:.2f} speedup={theirs_mean / ours_mean:.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
