"""Our long-lived connections plan each execution: a plan kept from a table's empty start would scan it all."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi import FastAPI

from consumers.worker import ProjectionWorker
from core.pg_session import configure_session
from projections.rollouts import PROJECTION

pytestmark = pytest.mark.pg

ROWS = 30_000


#: The rollouts read model's shape (projections/sql/rollouts): the planner's guesses for a table it never
#: analysed follow from the width of its rows.
_TABLE = """
CREATE TABLE grown (
    rollout_id text PRIMARY KEY, status text NOT NULL, enqueued boolean NOT NULL, input jsonb, mode text,
    resources_id text, config jsonb, metadata jsonb, priority integer NOT NULL, enqueued_at timestamptz,
    cancelled_at timestamptz, requeued_after text, start_time timestamptz, end_time timestamptz,
    attempt_count integer NOT NULL, latest_attempt_id text
) WITH (autovacuum_enabled = off);
CREATE INDEX grown_status ON grown (status, enqueued_at, rollout_id);
CREATE INDEX grown_mode ON grown (mode, enqueued_at, rollout_id);
PREPARE lookup (text[]) AS SELECT * FROM grown WHERE rollout_id = ANY($1);
"""


async def _plan_after_growth(conn: psycopg.AsyncConnection[Any]) -> str:
    """The plan of a lookup by key, prepared while the table was empty, once the table holds ``ROWS`` rows.

    As the rollouts projection's loads after a start: batches of ids not there yet, then the table grows.
    Autovacuum is off for the table: its first ANALYZE would invalidate the kept plan, and it comes when it comes.
    """
    await conn.execute(_TABLE)
    batch = "{" + ",".join(f"ro-{i}" for i in range(50)) + "}"
    for _ in range(6):  # past the five custom plans PostgreSQL makes before it weighs a generic one
        await conn.execute(f"EXECUTE lookup('{batch}')")
    await conn.execute(
        "INSERT INTO grown (rollout_id, status, enqueued, input, mode, priority, enqueued_at, attempt_count)"
        " SELECT 'ro-' || g, 'queuing', true, jsonb_build_object('question', repeat('x', 100)), 'train', 0, now(), 0"
        " FROM generate_series(1, %s) g",
        (ROWS,),
    )
    cur = await conn.execute(f"EXPLAIN EXECUTE lookup('{batch}')")
    return "\n".join(row[0] for row in await cur.fetchall())


async def test_a_plan_kept_from_an_empty_table_scans_it_all_and_ours_do_not(pg_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        kept = await _plan_after_growth(conn)
        await conn.execute("DROP TABLE grown; DEALLOCATE lookup")
        await configure_session(conn)
        ours = await _plan_after_growth(conn)
    # Without the setting PostgreSQL keeps the generic plan it made when the table was empty: a full scan.
    assert "Seq Scan on grown" in kept, kept
    assert "Seq Scan" not in ours and "grown_pkey" in ours, ours


async def _plan_cache_mode(conn: psycopg.AsyncConnection[Any]) -> str:
    cur = await conn.execute("SHOW plan_cache_mode")
    return str((await cur.fetchone() or [""])[0])


@pytest.mark.kafka
async def test_the_projection_worker_and_the_api_pool_plan_each_execution(pg_url: str, app: FastAPI) -> None:
    worker = ProjectionWorker(PROJECTION, bootstrap="unused:9092", database_url=pg_url)  # not started: no broker
    async with await worker.connection() as conn:
        assert await _plan_cache_mode(conn) == "force_custom_plan"
    async with app.state.pool.connection() as conn:
        assert await _plan_cache_mode(conn) == "force_custom_plan"
    async with await psycopg.AsyncConnection.connect(pg_url) as other:
        assert await _plan_cache_mode(other) == "auto", "the database's default is left alone"
