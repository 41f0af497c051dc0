"""A pipelined transaction: what it does and the errors it raises are those of a plain one, and a statement
nobody reads goes out without waiting for its result."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg import errors

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
