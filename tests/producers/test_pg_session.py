"""Our long-lived connections plan each execution: a plan kept from a table's empty start would scan it all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI

from consumers import worker as worker_module
from consumers.worker import ProjectionWorker
from core.config import Settings
from core.pg_session import configure_session
from producers import outbox, watchdog
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


@pytest.mark.kafka
async def test_the_outbox_relay_and_the_watchdog_plan_each_execution(
    pg_url: str, kafka_bootstrap: str, kafka_topics: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each configures the connection it works on; what that connection then shows is recorded, by module."""
    seen: dict[str, str] = {}

    def spying(module: str) -> Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]:
        async def spy(conn: psycopg.AsyncConnection[Any]) -> None:
            await configure_session(conn)
            seen[module] = await _plan_cache_mode(conn)

        return spy

    monkeypatch.setattr(outbox, "configure_session", spying("relay"))
    monkeypatch.setattr(watchdog, "configure_session", spying("watchdog"))
    settings = Settings(database_url=pg_url, kafka_bootstrap=kafka_bootstrap, topic_prefix=kafka_topics)
    stop = asyncio.Event()
    running = asyncio.create_task(watchdog.run_watchdog(settings, stop, interval_s=0.05))
    try:
        for _ in range(400):
            if len(seen) == 2 or running.done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
    assert seen == {"relay": "force_custom_plan", "watchdog": "force_custom_plan"}


async def test_a_worker_connection_that_fails_its_session_setting_is_closed(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[psycopg.AsyncConnection[Any]] = []

    async def failing(conn: psycopg.AsyncConnection[Any]) -> None:
        opened.append(conn)
        raise psycopg.OperationalError("the server closed the connection")

    monkeypatch.setattr(worker_module, "configure_session", failing)
    worker = ProjectionWorker(PROJECTION, bootstrap="unused:9092", database_url=pg_url)
    with pytest.raises(psycopg.OperationalError):
        await worker.connection()
    assert len(opened) == 1 and opened[0].closed
    monkeypatch.undo()
    async with await worker.connection() as conn:  # the next call opens another
        assert conn is not opened[0] and await _plan_cache_mode(conn) == "force_custom_plan"
