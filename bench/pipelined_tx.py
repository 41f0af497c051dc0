"""A decision-shaped transaction sent plainly and in pipeline mode (``producers.pipelined``), alternating rounds.

The transaction has a claim's shape: ``BEGIN``, a ``SELECT ... FOR UPDATE`` and ``SELECT clock_timestamp()`` (both
read), two ``UPDATE``/``INSERT`` statements nobody reads, an ``INSERT ... RETURNING`` (read), ``COMMIT``. Plain, it
waits for PostgreSQL seven times; pipelined, three. Per transaction: wall time, the client's CPU (this process)
and the server's (its backend, from /proc). One connection, asyncio, tables in a schema of their own (dropped at
the end); PostgreSQL is started here without fsync unless AGL_DATABASE_URL points elsewhere (the server's CPU
then reads 0 unless its backends run on this machine).

    .venv/bin/python bench/pipelined_tx.py [--transactions 3000] [--rounds 3]

Last line: ``plain_us=<wall> pipelined_us=<wall> speedup=<plain/pipelined> plain_server_us=<n>
pipelined_server_us=<n> plain_client_us=<n> pipelined_client_us=<n>`` (medians over the rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agl.stack._process import free_port
from agl.stack.postgres import EmbeddedPostgres
from bench._cpu import cost_per_call_us
from producers.pipelined import pipelined_transaction


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    url = os.environ.get("AGL_DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="agl-bench-") as tmp:
        postgres = EmbeddedPostgres(data_dir=Path(tmp) / "postgres", port=free_port(), durable=False)
        await postgres.start(60)
        try:
            yield postgres.url()
        finally:
            await postgres.stop()


async def transaction(conn: psycopg.AsyncConnection[Any], ids: list[int], pipelined: bool) -> None:
    block = pipelined_transaction(conn) if pipelined else conn.transaction()
    async with block:
        locked = await conn.execute("SELECT id, n FROM t WHERE id = ANY(%b) ORDER BY id FOR UPDATE", (ids,))
        clock = await conn.execute("SELECT clock_timestamp()")
        await locked.fetchall()
        row = await clock.fetchone()
        assert row is not None
        await conn.execute("UPDATE t SET n = n + 1 FROM unnest(%b::int[]) AS v(id) WHERE t.id = v.id", (ids,))
        await conn.execute("INSERT INTO log (id, at) SELECT v.id, %s FROM unnest(%b::int[]) AS v(id)", (row[0], ids))
        appended = await conn.execute(
            "INSERT INTO ob (v) SELECT v.id FROM unnest(%b::int[]) AS v(id) RETURNING oid", (ids,)
        )
        await appended.fetchall()


async def measure(conn: psycopg.AsyncConnection[Any], backend: int, n: int, pipelined: bool) -> tuple[float, ...]:
    async def one(i: int) -> None:
        await transaction(conn, [i % 100, (i + 1) % 100], pipelined)

    return await cost_per_call_us(one, n=n, warm=200, pid=backend)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    schema = sql.Identifier(f"bench_{uuid.uuid4().hex[:8]}")
    async with database() as url, await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        await conn.execute(sql.SQL("SET search_path TO {}").format(schema))
        try:
            await conn.execute("CREATE TABLE t (id int PRIMARY KEY, n int)")
            await conn.execute("INSERT INTO t SELECT g, 0 FROM generate_series(0, 99) g")
            await conn.execute("CREATE TABLE log (id int, at timestamptz)")
            await conn.execute("CREATE TABLE ob (oid bigserial PRIMARY KEY, v int)")
            row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
            assert row is not None
            figures: dict[bool, list[tuple[float, ...]]] = {False: [], True: []}
            for round_ in range(args.rounds):
                for pipelined in (False, True):
                    got = await measure(conn, row[0], args.transactions, pipelined)
                    figures[pipelined].append(got)
                    kind = "pipelined" if pipelined else "plain"
                    print(
                        f"round {round_ + 1}, {kind}: {got[0]:.0f} us per transaction, "
                        f"client CPU {got[1]:.0f} us, server CPU {got[2]:.0f} us",
                        flush=True,
                    )
        finally:
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
    med = {p: [statistics.median(f[i] for f in figures[p]) for i in range(3)] for p in (False, True)}
    print(
        f"plain_us={med[False][0]:.0f} pipelined_us={med[True][0]:.0f} speedup={med[False][0] / med[True][0]:.2f} "
        f"plain_server_us={med[False][2]:.0f} pipelined_server_us={med[True][2]:.0f} "
        f"plain_client_us={med[False][1]:.0f} pipelined_client_us={med[True][1]:.0f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
