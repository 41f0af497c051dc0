"""Sequence ids of spans: the client's, or the next numbers of each rollout's span counter.

Taken inside the recording transaction (the counters of ``command_counters``, kind ``span_sequence``, all in one
statement), so a failed request gives its numbers back; rollouts' counters are locked in a fixed order, so
concurrent batches cannot deadlock.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection

    from producers.models import SpanIn


async def span_sequence_ids(conn: AsyncConnection[Any], items: Sequence[SpanIn]) -> list[int]:
    """One sequence id per span of ``items``, in their order."""
    missing = Counter(item.rollout_id for item in items if item.sequence_id is None)
    if not missing:
        return [item.sequence_id for item in items if item.sequence_id is not None]
    ids = sorted(missing)  # a fixed order, so concurrent batches cannot deadlock
    cur = await conn.execute(
        "INSERT INTO command_counters (kind, id, last)"
        " SELECT 'span_sequence', r.id, r.n FROM unnest(%b::text[], %b::bigint[]) WITH ORDINALITY AS r(id, n, o)"
        " ORDER BY r.o"
        " ON CONFLICT (kind, id) DO UPDATE SET last = command_counters.last + EXCLUDED.last RETURNING id, last",
        (ids, [missing[i] for i in ids]),
    )
    # The first number of each rollout's run: its counter's new last, less the run's length, plus one.
    next_of = {rollout_id: last - missing[rollout_id] + 1 for rollout_id, last in await cur.fetchall()}
    sequence_ids: list[int] = []
    for item in items:
        if item.sequence_id is None:
            sequence_ids.append(next_of[item.rollout_id])
            next_of[item.rollout_id] += 1
        else:
            sequence_ids.append(item.sequence_id)
    return sequence_ids
