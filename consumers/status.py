"""Status and health of every projection: positions from PostgreSQL, high watermarks from fetch responses.

A projection is *stalled* when it has lag and has not stored a position for ``STALL_AFTER_S`` seconds. Lag counts
committed records only: a trailing transaction marker is no lag (see ``consumers.watermarks``).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from consumers.watermarks import fetch_watermarks
from projections.dead_letters import count_parked
from projections.tracking import Generation

if TYPE_CHECKING:
    from psycopg import AsyncConnection

STALL_AFTER_S = 30.0


@dataclass
class PartitionStatus:
    topic: str
    partition: int
    position: int
    high_watermark: int
    lag: int
    lag_seconds: float
    events_per_s: float
    dead_letters: int
    last_progress_at: datetime | None


@dataclass
class ProjectionStatus:
    name: str
    version: int
    generation: int
    state: str
    partitions: list[PartitionStatus] = field(default_factory=list)
    lag: int = 0
    lag_seconds: float = 0.0
    events_per_s: float = 0.0
    dead_letters: int = 0
    last_progress_at: datetime | None = None
    stalled: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _generations(conn: AsyncConnection[Any]) -> list[Generation]:
    # A detached projection's kept tables fall behind on purpose: reporting them would read as a stall.
    cur = await conn.execute(
        "SELECT projection, generation, version, state FROM projection_generations "
        "WHERE state IN ('active', 'building') "
        "AND projection NOT IN (SELECT name FROM attached_projections WHERE detached_at IS NOT NULL) "
        "ORDER BY projection, generation"
    )
    return [Generation(p, g, v, s) for p, g, v, s in await cur.fetchall()]


async def _positions(conn: AsyncConnection[Any], schema: str) -> list[tuple[str, int, int, float, datetime]]:
    cur = await conn.execute(
        "SELECT topic, partition, next_offset, events_per_s, updated_at FROM projection_offsets "
        "WHERE projection = %s ORDER BY topic, partition",
        (schema,),
    )
    return [(t, p, int(o), float(r), u) for t, p, o, r, u in await cur.fetchall()]


async def gather_status(
    conn: AsyncConnection[Any], bootstrap: str, *, stall_after_s: float = STALL_AFTER_S
) -> list[ProjectionStatus]:
    """One entry per active or building generation, with per-partition figures."""
    gens = await _generations(conn)
    rows = {gen.schema: await _positions(conn, gen.schema) for gen in gens}
    cur = await conn.execute("SELECT now()")
    now_row = await cur.fetchone()
    assert now_row is not None
    now: datetime = now_row[0]
    # Fetched at each generation's own positions (the first record there tells how old its backlog is), all
    # generations at once: one after the other, a stack's ten projections made a readiness probe last seconds.
    all_marks = await asyncio.gather(
        *(fetch_watermarks(bootstrap, {(t, p): o for t, p, o, _, _ in rows[gen.schema]}) for gen in gens)
    )
    out = []
    for gen, marks in zip(gens, all_marks, strict=True):
        status = ProjectionStatus(gen.projection, gen.version, gen.generation, gen.state)
        parked = await count_parked(conn, gen)
        for topic, partition, position, stored_rate, updated in rows[gen.schema]:
            mark = marks.get((topic, partition))
            hw = max(position, mark.high_watermark) if mark else position
            next_ms = mark.next_record_ms if mark and mark.next_record_ms is not None and hw > position else None
            lag_s = max(0.0, now.timestamp() - next_ms / 1000) if next_ms is not None else 0.0
            # A rate is current only while its partition makes progress.
            rate = stored_rate if (now - updated).total_seconds() < 10 else 0.0
            lag = mark.lag(position) if mark else 0
            status.partitions.append(
                PartitionStatus(topic, partition, position, hw, lag, lag_s, rate,
                                parked.get((topic, partition), 0), updated)
            )  # fmt: skip
        _summarise(status, now, stall_after_s)
        out.append(status)
    return out


def _summarise(status: ProjectionStatus, now: datetime, stall_after_s: float) -> None:
    parts = status.partitions
    status.lag = sum(p.lag for p in parts)
    status.lag_seconds = max((p.lag_seconds for p in parts), default=0.0)
    status.events_per_s = sum(p.events_per_s for p in parts)
    status.dead_letters = sum(p.dead_letters for p in parts)
    progress = [p.last_progress_at for p in parts if p.last_progress_at is not None]
    status.last_progress_at = max(progress) if progress else None
    idle_s = (now - status.last_progress_at).total_seconds() if status.last_progress_at else float("inf")
    status.stalled = status.lag > 0 and idle_s > stall_after_s
