"""A pipelined transaction: what it does and the errors it raises are those of a plain one."""

from __future__ import annotations

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
