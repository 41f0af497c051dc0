"""The reference a read model is compared with: the same events folded in memory, in one go."""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

from projections.rollouts import State, fold_all
from tests.consumers.helpers import fetch_all


def reference_rows(events: list[Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    state = State({}, {})
    fold_all(state, events)
    rollouts = sorted(astuple(r) for r in state.rollouts.values())
    attempts = sorted(astuple(a) for a in state.attempts.values())
    return rollouts, attempts


async def stored_rows(pg_url: str, schema: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    from projections.rollouts import _ATTEMPT_COLS, _ROLLOUT_COLS

    rollouts = await fetch_all(pg_url, f"SELECT {', '.join(_ROLLOUT_COLS)} FROM {schema}.rollouts")  # noqa: S608
    attempts = await fetch_all(pg_url, f"SELECT {', '.join(_ATTEMPT_COLS)} FROM {schema}.attempts")  # noqa: S608
    return sorted(rollouts), sorted(attempts)


async def assert_ledger_exact(pg_url: str, schema: str, expected: int) -> None:
    """Every record applied exactly once: as many ledger rows as records, none twice."""
    rows = await fetch_all(
        pg_url,
        f'SELECT count(*), count(DISTINCT (topic, partition, "offset")) FROM {schema}.ledger',  # noqa: S608
    )
    assert rows == [(expected, expected)], f"ledger (rows, distinct) = {rows[0]}, expected {expected} each"


async def table_rows(pg_url: str, schema: str, tables: tuple[str, ...]) -> dict[str, list[str]]:
    """Every row of each table as text, sorted: two generations compare row by row, whatever their columns."""
    out = {}
    for table in tables:
        rows = await fetch_all(pg_url, f"SELECT t::text FROM {schema}.{table} t")  # noqa: S608
        out[table] = sorted(r[0] for r in rows)
    return out
