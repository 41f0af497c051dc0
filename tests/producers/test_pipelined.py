"""A pipelined transaction: what it does and the errors it raises are those of a plain one, and a statement
nobody reads goes out without waiting for its result."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, pq

from producers.pipelined import pipelined_transaction

pytestmark = [pytest.mark.pg]


async def test_statements_nobody_reads_commit_with_the_rest(pg_conn):
    await pg_conn.execute("CREATE TABLE p (id int PRIMARY KEY, n int)")
    async with pipelined_transaction(pg_conn):
        await pg_conn.execute("INSERT INTO p VALUES (1, 0), (2, 0)")  # not read
        read = await pg_conn.execute("UPDATE p SET n = n + 1 WHERE id = 1 RETURNING n")
        assert await read.fetchall() == [(1,)]
        await pg_conn.execute("UPDATE p SET n = 10 WHERE id = 2")  # not read, sent with the commit
    rows = await (await pg_conn.execute("SELECT id, n FROM p ORDER BY id")).fetchall()
    assert rows == [(1, 1), (2, 10)]


async def test_an_error_of_a_statement_nobody_read_keeps_its_type_and_rolls_everything_back(pg_conn):
    await pg_conn.execute("CREATE TABLE p (id int PRIMARY KEY)")
    with pytest.raises(errors.UniqueViolation):
        async with pipelined_transaction(pg_conn):
            await pg_conn.execute("INSERT INTO p VALUES (1)")
            await pg_conn.execute("INSERT INTO p VALUES (1)")  # fails, unread: raised at the end
    with pytest.raises(errors.UniqueViolation):
        async with pipelined_transaction(pg_conn):
            await pg_conn.execute("INSERT INTO p VALUES (2)")
            await pg_conn.execute("INSERT INTO p VALUES (2)")
            await (await pg_conn.execute("SELECT 1")).fetchone()  # raised at the next read
    assert await (await pg_conn.execute("SELECT count(*) FROM p")).fetchone() == (0,)
    # The connection is usable afterwards, outside pipeline mode.
    assert await (await pg_conn.execute("SELECT 42")).fetchone() == (42,)


async def test_a_statement_nobody_reads_does_not_wait_for_the_server(pg_conn, pg_url):
    """What the pipeline is for: ``execute`` of a statement whose result is not read returns at once, even while
    the server is still running it (here: waiting for a lock another session holds). A plain transaction's
    ``execute`` would wait for the lock, and the guard below would expire."""
    await pg_conn.execute("CREATE TABLE p (id int PRIMARY KEY)")
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as holder:
        await holder.execute("SELECT pg_advisory_lock(7301)")
        async with pipelined_transaction(pg_conn):
            await asyncio.wait_for(pg_conn.execute("SELECT pg_advisory_xact_lock(7301)"), 10)
            await asyncio.wait_for(pg_conn.execute("INSERT INTO p VALUES (1)"), 10)
            await holder.execute("SELECT pg_advisory_unlock(7301)")  # now the server can go on
            read = await pg_conn.execute("SELECT count(*) FROM p")
            assert await read.fetchone() == (1,)
    assert await (await pg_conn.execute("SELECT count(*) FROM p")).fetchone() == (1,)


def _protocol(path: Path) -> list[str]:
    """The message names of a libpq trace, prefixed by direction: ``F Sync``, ``B ReadyForQuery``..."""
    return [f"{line.split()[0]} {line.split()[2]}" for line in path.read_text().splitlines() if line.strip()]


async def test_it_waits_at_each_read_and_once_at_the_end(pg_conn, tmp_path):
    """BEGIN and COMMIT travel with the other statements: one Sync, one ReadyForQuery, a flush per read. psycopg's
    ``transaction()`` inside a pipeline synced four times (on entering, twice on leaving, then the pipeline)."""
    await pg_conn.execute("CREATE TABLE p (id int PRIMARY KEY, n int)")
    trace = tmp_path / "trace.txt"
    with trace.open("w") as f:
        pg_conn.pgconn.trace(f.fileno())
        pg_conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            async with pipelined_transaction(pg_conn):
                await (await pg_conn.execute("INSERT INTO p VALUES (1, 0) RETURNING id")).fetchall()
                await pg_conn.execute("UPDATE p SET n = 1 WHERE id = 1")
                await (await pg_conn.execute("SELECT n FROM p WHERE id = 1")).fetchall()
                await pg_conn.execute("UPDATE p SET n = 2 WHERE id = 1")
        finally:
            pg_conn.pgconn.untrace()
    messages = _protocol(trace)
    assert messages.count("F Sync") == 1
    assert messages.count("B ReadyForQuery") == 1
    # A flush for each of the two reads, before the Sync. After it psycopg flushes once more only if the answers
    # had not all arrived while it was sending (timing: CI saw both), and the Sync makes the server send anyway.
    assert messages[: messages.index("F Sync")].count("F Flush") == 2
    assert await (await pg_conn.execute("SELECT n FROM p")).fetchone() == (2,)
    assert pg_conn.info.transaction_status == pq.TransactionStatus.IDLE


async def test_a_block_that_raises_rolls_back_and_leaves_the_connection_idle(pg_conn):
    await pg_conn.execute("CREATE TABLE p (id int PRIMARY KEY)")
    with pytest.raises(LookupError):
        async with pipelined_transaction(pg_conn):
            await pg_conn.execute("INSERT INTO p VALUES (1)")
            await (await pg_conn.execute("SELECT 1")).fetchone()
            raise LookupError("the caller's own reason")
    assert pg_conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await (await pg_conn.execute("SELECT count(*) FROM p")).fetchone() == (0,)


async def test_a_failing_commit_raises_its_own_error(pg_conn):
    await pg_conn.execute(
        "CREATE TABLE parent (id int PRIMARY KEY);"
        " CREATE TABLE child (id int REFERENCES parent DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(errors.ForeignKeyViolation):
        async with pipelined_transaction(pg_conn):
            await pg_conn.execute("INSERT INTO child VALUES (1)")  # checked at COMMIT
    assert pg_conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await (await pg_conn.execute("SELECT count(*) FROM child")).fetchone() == (0,)


async def test_a_cancelled_block_rolls_back(pg_conn):
    await pg_conn.execute("CREATE TABLE p (id int PRIMARY KEY)")
    entered = asyncio.Event()

    async def work() -> None:
        async with pipelined_transaction(pg_conn):
            await (await pg_conn.execute("INSERT INTO p VALUES (1) RETURNING id")).fetchone()
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pg_conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await (await pg_conn.execute("SELECT count(*) FROM p")).fetchone() == (0,)


async def test_inside_a_transaction_it_nests_as_a_savepoint(pg_conn):
    await pg_conn.execute("CREATE TABLE p (id int PRIMARY KEY)")
    async with pg_conn.transaction():
        await pg_conn.execute("INSERT INTO p VALUES (1)")
        with pytest.raises(errors.UniqueViolation):
            async with pipelined_transaction(pg_conn):
                await pg_conn.execute("INSERT INTO p VALUES (2)")
                await pg_conn.execute("INSERT INTO p VALUES (1)")
        await pg_conn.execute("INSERT INTO p VALUES (3)")
    rows = await (await pg_conn.execute("SELECT id FROM p ORDER BY id")).fetchall()
    assert rows == [(1,), (3,)]
