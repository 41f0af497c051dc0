"""Test projections: the rollouts read model plus a ledger with one row per applied record and no dedupe.

The ledger has no unique constraint and the engine's event-id dedupe is off, so a record applied twice shows up
as two rows and a lost one as none: exactly-once is visible in ``count(*)`` versus ``count(DISTINCT ...)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from psycopg import AsyncConnection

from projections import rollouts
from projections.base import Envelope
from projections.migrations import Migration

LEDGER_SQL = (
    'CREATE TABLE ledger (topic text NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL, event_id uuid)'
)


async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    await rollouts.apply(envelopes, conn)
    async with conn.cursor() as cur:
        await cur.executemany(
            'INSERT INTO ledger (topic, partition, "offset", event_id) VALUES (%s, %s, %s, %s)',
            [(e.topic, e.partition, e.offset, e.require_event().event_id) for e in envelopes],
        )


PROJECTION = replace(
    rollouts.PROJECTION,
    name="ledger",
    apply=apply,
    dedupe=False,
    # Numbered past the rollouts migrations, whichever they become.
    migrations=(*rollouts.PROJECTION.migrations, Migration(1000, "ledger", LEDGER_SQL)),
    tables=("rollouts", "attempts", "ledger"),
)

_dropped = {"done": False}


async def apply_dropping_connection_once(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    """Apply, then lose the connection mid-transaction once per process (as a failover or an admin would)."""
    await apply(envelopes, conn)
    if not _dropped["done"] and os.environ.get("AGL_TEST_NO_DROP") is None:
        _dropped["done"] = True
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")


DROPPING = replace(PROJECTION, name="dropping", apply=apply_dropping_connection_once)


class Poison(Exception):
    """A non-retriable failure of apply on one event's data."""


async def apply_rejecting_poison(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    for e in envelopes:
        if getattr(e.event, "input", None) == "poison":
            raise Poison(f"cannot apply {e.key!r}")
    await apply(envelopes, conn)


REJECTING = replace(PROJECTION, name="rejecting", apply=apply_rejecting_poison)
