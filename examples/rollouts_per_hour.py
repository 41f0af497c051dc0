"""An example read model a user would write: how many rollouts were enqueued per mode and per hour.

Attach it to a running stack; it catches up from the start of history, then `agl up` keeps it up to date::

    agl projections attach examples.rollouts_per_hour:PROJECTION
    psql "$DATABASE_URL" -c 'SELECT * FROM rollouts_per_hour_g1.rollouts_per_hour ORDER BY hour, mode'
    agl projections detach rollouts_per_hour          # stops it; add --drop --yes to drop its tables

Counting is not idempotent (a second copy of an event would count twice), so it leaves ``idempotent_types``
empty: the engine remembers each applied ``event_id`` and skips re-published copies. The hour comes from the
event's ``occurred_at``, never from the clock, so a rebuild counts the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from projections.base import Envelope, Projection
from projections.migrations import Migration
from schemas import RolloutEnqueued
from schemas.topics import ROLLOUTS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

#: Runs inside the projection's generation schema (rollouts_per_hour_g1...): table names are unqualified.
TABLES = """
CREATE TABLE rollouts_per_hour (
    hour     timestamptz NOT NULL,
    mode     text        NOT NULL,  -- train, val, test, or 'none' when the rollout named no mode
    rollouts bigint      NOT NULL,
    PRIMARY KEY (hour, mode)
)
"""


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    """Add the batch's counts to the stored ones: one upsert per (hour, mode), not one per event."""
    counts: Counter[tuple[datetime, str]] = Counter()
    for envelope in envelopes:
        event = envelope.require_event()
        assert isinstance(event, RolloutEnqueued)
        counts[(_hour(event.occurred_at), event.mode or "none")] += 1
    if not counts:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO rollouts_per_hour (hour, mode, rollouts) VALUES (%s, %s, %s) "
            "ON CONFLICT (hour, mode) DO UPDATE SET rollouts = rollouts_per_hour.rollouts + excluded.rollouts",
            [(hour, mode, n) for (hour, mode), n in sorted(counts.items())],
        )


PROJECTION = Projection(
    name="rollouts_per_hour",
    version=1,
    topics=(ROLLOUTS,),
    event_types=frozenset({RolloutEnqueued}),
    migrations=(Migration(1, "tables", TABLES),),
    tables=("rollouts_per_hour",),
    apply=apply,
    description="rollouts enqueued per mode and hour (an example of a user's read model)",
)
