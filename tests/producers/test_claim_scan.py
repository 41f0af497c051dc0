"""A claim walks the queue's index in its order: the entries of rollouts claimed since the table's last vacuum are
passed over once, where PostgreSQL's own plan (a bitmap scan) read them all again, in the heap, at every claim."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.abc import Params

from producers import lifecycle
from producers.idempotency import migrate_commands
from producers.publisher import EventPublisher

pytestmark = pytest.mark.pg

QUEUED = 3000


class _Explaining(psycopg.AsyncConnection[Any]):
    """A connection that, before running the claim's select, asks PostgreSQL for its plan (same transaction)."""

    plans: list[str]

    async def execute(
        self, query: Any, params: Params | None = None, *, prepare: bool | None = None, binary: bool = False
    ) -> psycopg.AsyncCursor[Any]:
        if query == lifecycle._CLAIMABLE:
            cur = await super().execute("EXPLAIN " + lifecycle._CLAIMABLE, params)
            self.plans.append("\n".join(row[0] for row in await cur.fetchall()))
        return await super().execute(query, params, prepare=prepare, binary=binary)


async def test_a_claim_walks_the_queue_index_in_order(pg_url: str) -> None:
    publisher = EventPublisher("unused:9092")  # encodes records only
    async with await _Explaining.connect(pg_url, autocommit=True) as conn:
        conn.plans = []
        await migrate_commands(conn)
        await conn.execute(
            "INSERT INTO lifecycle_rollouts (rollout_id, status, config, input)"
            " SELECT 'ro-' || g, 'queuing', '{}', '{}' FROM generate_series(1, %s) g",
            (QUEUED,),
        )
        await conn.execute("ANALYZE lifecycle_rollouts")
        claimed = []
        for _ in range(3):
            got = await lifecycle.claim(
                conn, publisher, worker_id="w-1", capabilities=[], limit=100, envelope={"source": "test"}, start=True
            )
            claimed += [c.rollout_id for c in got.claims]
        # Claimed in enqueue order, each once (the claims' behaviour is tested with the API; here, their plan).
        assert claimed == [f"ro-{i}" for i in range(1, 301)]
        assert len(conn.plans) == 3
        for plan in conn.plans:
            assert "Index Scan using lifecycle_queue" in plan, plan
            assert "Bitmap" not in plan, plan
            assert "Sort" not in plan, plan  # the index's order is the claim's order
        # Outside the claim's transaction the settings are gone: PostgreSQL's own plan for the same select is not
        # the walk of the index (a sequential scan and a sort on this small table, a bitmap scan on a larger one).
        cur = await conn.execute("EXPLAIN " + lifecycle._CLAIMABLE, ([], "w-1", None, 100))
        assert "Index Scan using lifecycle_queue" not in "\n".join(row[0] for row in await cur.fetchall())
