"""One PostgreSQL round trip over TCP loopback and over the server's Unix-domain socket, alternating rounds.

The embedded server listens on both (``agl.stack.postgres``); the stack's services use the socket. Each round runs
``--statements`` times ``SELECT %s::int`` (sent, answered, read) on one asyncio connection, first over TCP, then
over the socket. Per statement: wall time, the client's CPU (this process) and the server's (its backend, from
/proc). PostgreSQL is started here without fsync unless both AGL_DATABASE_URL (TCP) and AGL_DATABASE_SOCKET_URL
(the same server over its socket) point elsewhere; the server's CPU then reads 0 unless its backends run here.

    .venv/bin/python bench/pg_socket.py [--statements 20000] [--rounds 3]

Last line: ``tcp_us=<wall> unix_us=<wall> speedup=<tcp/unix> tcp_client_us=<n> unix_client_us=<n>
tcp_server_us=<n> unix_server_us=<n>`` (medians over the rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agl.stack._process import free_port
from agl.stack.postgres import EmbeddedPostgres
from bench._cpu import cost_per_call_us


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[tuple[str, str]]:
    """(TCP URL, socket URL) of one server."""
    tcp, unix = os.environ.get("AGL_DATABASE_URL"), os.environ.get("AGL_DATABASE_SOCKET_URL")
    if tcp and unix:
        yield tcp, unix
        return
    with tempfile.TemporaryDirectory(prefix="agl-bench-") as tmp:
        postgres = EmbeddedPostgres(data_dir=Path(tmp) / "postgres", port=free_port(), durable=False)
        if postgres.socket_dir is None:
            raise SystemExit(f"{tmp} is too long a path for a socket address; set TMPDIR to a shorter directory")
        await postgres.start(60)
        try:
            yield postgres.url("postgres"), postgres.local_url("postgres")
        finally:
            await postgres.stop()


async def measure(url: str, n: int) -> tuple[float, float, float]:
    """Microseconds per statement: wall, client CPU, server CPU."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        backend = row[0]

        async def select(i: int) -> None:
            await (await conn.execute("SELECT %s::int", (i,))).fetchone()

        return await cost_per_call_us(select, n=n, warm=500, pid=backend)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--statements", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, list[tuple[float, float, float]]] = {"tcp": [], "unix": []}
    async with database() as (tcp, unix):
        for round_ in range(args.rounds):
            for name, url in (("tcp", tcp), ("unix", unix)):
                wall, client, server = await measure(url, args.statements)
                figures[name].append((wall, client, server))
                print(f"round {round_ + 1} {name}: {wall:.1f} us per statement, client CPU {client:.1f} us, "
                      f"server CPU {server:.1f} us", flush=True)  # fmt: skip
    med = {name: [statistics.median(column) for column in zip(*rows, strict=True)] for name, rows in figures.items()}
    print(
        f"tcp_us={med['tcp'][0]:.1f} unix_us={med['unix'][0]:.1f} speedup={med['tcp'][0] / med['unix'][0]:.2f} "
        f"tcp_client_us={med['tcp'][1]:.1f} unix_client_us={med['unix'][1]:.1f} "
        f"tcp_server_us={med['tcp'][2]:.1f} unix_server_us={med['unix'][2]:.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
