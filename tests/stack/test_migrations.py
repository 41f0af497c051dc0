from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql

from agl.stack.migrations import migrate_stack
from projections.migrations import Migration, load_package_migrations, migrate, migrate_core
from tests.fixtures.pg import with_database

pytestmark = pytest.mark.pg


async def test_core_migrations_run_once(pg_conn):
    # The template already applied them: a second run applies nothing and leaves the tables in place.
    assert await migrate_core(pg_conn) == []
    cur = await pg_conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    assert (await cur.fetchone())[0].startswith("0.8")


async def test_failed_migration_leaves_nothing_behind(pg_conn):
    good = Migration(1, "good", "CREATE TABLE good_one (id int)")
    bad = Migration(2, "bad", "CREATE TABLE bad_one (id int); SELECT * FROM no_such_table")
    with pytest.raises(Exception, match="no_such_table"):
        await migrate(pg_conn, "demo", [good, bad])
    cur = await pg_conn.execute("SELECT version FROM schema_migrations WHERE namespace = 'demo'")
    assert await cur.fetchall() == []
    cur = await pg_conn.execute("SELECT to_regclass('bad_one'), to_regclass('good_one')")
    assert await cur.fetchone() == (None, None)
    assert await migrate(pg_conn, "demo", [good]) == [1]


@pytest_asyncio.fixture(loop_scope="session")
async def empty_db_url(pg_server_url: str) -> AsyncIterator[str]:
    """A database with no migrations at all (the per-test databases are cloned from a migrated template)."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(pg_server_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield with_database(pg_server_url, name)
    async with await psycopg.AsyncConnection.connect(pg_server_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def applied(conn: psycopg.AsyncConnection[Any], namespace: str) -> list[int]:
    cur = await conn.execute(
        "SELECT version FROM schema_migrations WHERE namespace = %s ORDER BY version", (namespace,)
    )
    return [row[0] for row in await cur.fetchall()]


async def test_stack_namespace_alone_creates_the_stack_tables(empty_db_url):
    # The stack's tables come from its own namespace, not from the projection engine's core migrations.
    async with await psycopg.AsyncConnection.connect(empty_db_url, autocommit=True) as conn:
        assert await migrate_stack(conn) == [1]
        assert await applied(conn, "core") == []
        cur = await conn.execute("SELECT to_regclass('stack_state'), to_regclass('projection_offsets')")
        assert await cur.fetchone() == ("stack_state", None)
        assert await migrate_stack(conn) == []


async def test_database_migrated_by_the_old_files_keeps_its_stack_state(empty_db_url):
    # A database from before the stack namespace: core's first migration made stack_state and the stack wrote its
    # epoch there. Adopting the namespace keeps the table and its rows, so the positions still match the log.
    async with await psycopg.AsyncConnection.connect(empty_db_url, autocommit=True) as conn:
        await migrate_core(conn)
        await conn.execute("INSERT INTO stack_state (key, value) VALUES ('log_epoch', '\"epoch-old\"')")
        assert await applied(conn, "stack") == []
        assert await migrate_stack(conn) == [1]
        cur = await conn.execute("SELECT value FROM stack_state WHERE key = 'log_epoch'")
        assert await cur.fetchone() == ("epoch-old",)
        assert await migrate_core(conn) == []
        assert await migrate_stack(conn) == []


async def test_the_template_holds_both_namespaces(pg_conn):
    # Every test database is cloned from a template migrated the way `agl up` migrates a database.
    assert await applied(pg_conn, "stack") == [m.version for m in load_package_migrations("agl.stack")]
    assert await migrate_stack(pg_conn) == []
