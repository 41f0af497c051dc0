"""Pages of the rollouts read model: the rows and totals the filters ask for, in enqueue order, and a page reads
about a page of rows from the table, not every match (``projections.rollouts.page_query``)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from projections.migrations import load_package_migrations
from projections.rollouts import list_rollouts, page_query

pytestmark = [pytest.mark.pg]


async def _rollouts_table(conn: Any, n: int) -> list[tuple[str, str, str, int | None]]:
    """``n`` rollouts (id, status, mode, enqueue order or None) in the read model's own table."""
    for migration in load_package_migrations("projections", "sql/rollouts"):
        await conn.execute(migration.sql)

    # As a history looks: the old rollouts ended (mostly succeeded), the newest still queued or running. Ids out of
    # enqueue order, ties on the enqueue time (the id breaks them), and rollouts never enqueued.
    def status(i: int) -> str:
        if i < n * 9 // 10:
            return "failed" if i % 13 == 0 else "succeeded"
        return ("queuing", "running", "requeuing")[i % 3]

    rows = [
        (f"ro-{(i * 7919) % n:06d}", status(i), "train" if i % 4 else "val", None if i % 11 == 0 else i // 2)
        for i in range(n)
    ]
    await conn.execute(
        "INSERT INTO rollouts (rollout_id, status, enqueued, mode, priority, enqueued_at, attempt_count)"
        " SELECT r.id, r.status, r.at IS NOT NULL, r.mode, 0, timestamptz '2026-01-01' + r.at * interval '1 ms', 0"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[]) AS r(id, status, mode, at)",
        ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]),
    )
    await conn.execute("VACUUM ANALYZE rollouts")
    return rows


async def test_pages_hold_the_matches_in_enqueue_order_with_their_total(pg_conn):
    rows = await _rollouts_table(pg_conn, 600)
    ordered = sorted(rows, key=lambda r: (r[3] is None, r[3] or 0, r[0]))
    some_ids = [r[0] for r in rows[::9]]
    status_sets: list[tuple[str, ...]] = [(), ("succeeded",), ("running", "failed"), ("queuing", "failed", "nope")]
    status_sets.append((*(f"unknown-{i}" for i in range(9)), "running"))  # more than are read one by one
    for statuses, mode, ids, (limit, offset) in itertools.product(
        status_sets, (None, "val"), ([], some_ids), ((50, 0), (7, 40), (1000, 0), (5, 10_000))
    ):
        expected = [
            r[0]
            for r in ordered
            if (not statuses or r[1] in statuses) and (mode is None or r[2] == mode) and (not ids or r[0] in ids)
        ]
        page, total = await list_rollouts(
            pg_conn, status=statuses, mode=mode, rollout_ids=ids, limit=limit, offset=offset
        )
        case = f"status={statuses} mode={mode} ids={len(ids)} limit={limit} offset={offset}"
        assert [r.rollout_id for r in page] == expected[offset : offset + limit], case
        assert total == len(expected), case


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows the plan's scans of the table looked at (returned, or read and filtered out), from EXPLAIN ANALYZE."""
    looked = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
    own = looked * plan.get("Actual Loops", 1) if plan.get("Relation Name") == "rollouts" else 0
    return int(own + sum(_rows_read(child) for child in plan.get("Plans", ())))


async def test_a_page_reads_about_a_page_not_every_match(pg_conn):
    await _rollouts_table(pg_conn, 20_000)
    for filters in (
        {"status": ["succeeded"]},
        {"status": ["running"]},  # the newest: the enqueue order would walk the whole history to them
        {"status": ["succeeded", "queuing"]},
        {"status": ["queuing", "running", "failed"], "mode": "train"},
        {"mode": "val"},
        {},
    ):
        _, page, params = page_query(**filters, limit=10, offset=20)
        cur = await pg_conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {page}", params)
        (raw,) = await cur.fetchone()
        plan = (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]
        runs = max(1, len(filters.get("status", ())))
        # Each status's run reads at most limit + offset rows (more with a mode filter: the rows of other modes).
        assert _rows_read(plan) <= runs * 30 * 2, filters
