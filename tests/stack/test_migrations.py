from __future__ import annotations

import pytest

from projections.migrations import Migration, migrate, migrate_core

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
