"""Figures gathered when Prometheus scrapes: projection lag and rebuild progress (the shared status cache of
``GET /v1/projections``), rollouts by status and runner slots (one grouped query per read model). A scrape storm
costs one gathering a second: the figures are kept for ``SCRAPE_TTL_S``."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from consumers.routes import status_cache
from projections.errors import ProjectionNotReady
from projections.reading import reading
from projections.rollouts import PROJECTION as ROLLOUTS
from projections.routes.workers import DEFAULT_STALE_S
from projections.workers import _VIEW as WORKERS_VIEW  # the one definition of a worker's derived status
from projections.workers import PROJECTION as WORKERS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fastapi import Request
    from prometheus_client import Metric
    from psycopg import AsyncConnection

    from consumers.status import ProjectionStatus

log = logging.getLogger(__name__)

SCRAPE_TTL_S = 1.0


@dataclass
class Figures:
    projections: list[ProjectionStatus] = field(default_factory=list)
    rollouts_by_status: dict[str, int] = field(default_factory=dict)
    #: per worker status: (workers, slots, busy slots)
    workers_by_status: dict[str, tuple[int, int, int]] = field(default_factory=dict)


async def _rollouts_by_status(conn: AsyncConnection[Any]) -> dict[str, int]:
    async with reading(conn, ROLLOUTS):
        cur = await conn.execute("SELECT status, count(*) FROM rollouts GROUP BY status")
        return {status: int(n) for status, n in await cur.fetchall()}


async def _workers_by_status(conn: AsyncConnection[Any]) -> dict[str, tuple[int, int, int]]:
    async with reading(conn, WORKERS):
        cur = await conn.execute(
            f"SELECT status, count(*), coalesce(sum(slots), 0), coalesce(sum(busy_slots), 0) "  # noqa: S608
            f"FROM ({WORKERS_VIEW}) AS w GROUP BY status",
            {"stale_s": DEFAULT_STALE_S},
        )
        return {status: (int(n), int(s), int(b)) for status, n, s, b in await cur.fetchall()}


class ScrapeFigures:
    """The latest figures, refreshed at most once per ``ttl_s``; concurrent scrapes share one gathering."""

    def __init__(self, ttl_s: float = SCRAPE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.figures = Figures()
        self._at = -float("inf")
        self._lock = asyncio.Lock()

    async def refresh(self, request: Request) -> Figures:
        async with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                self.figures = await self._gather(request)
                self._at = time.monotonic()
            return self.figures

    async def _gather(self, request: Request) -> Figures:
        figures = Figures()
        # Each source fails alone: a projection not started yet must not hide the others' figures.
        try:
            figures.projections = await status_cache(request).get(request)
        except Exception as e:  # noqa: BLE001 - a scrape reports what it can
            log.warning("projection statuses unavailable for /metrics: %s", e)
        async with request.app.state.pool.connection() as conn:
            for name, gather in (("rollouts", _rollouts_by_status), ("workers", _workers_by_status)):
                try:
                    setattr(figures, f"{name}_by_status", await gather(conn))
                except ProjectionNotReady:
                    pass
                except Exception as e:  # noqa: BLE001
                    log.warning("%s figures unavailable for /metrics: %s", name, e)
        return figures


class FiguresCollector(Collector):
    """Renders the figures last gathered as gauges (``collect`` is synchronous; the gathering is not)."""

    def __init__(self, source: ScrapeFigures) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        f = self.source.figures
        yield from _projection_metrics(f.projections)
        rollouts = GaugeMetricFamily("agl_rollouts", "Rollouts in the read model, by status", labels=["status"])
        for status, n in sorted(f.rollouts_by_status.items()):
            rollouts.add_metric([status], n)
        yield rollouts
        workers = GaugeMetricFamily("agl_workers", "Runners in the read model, by status", labels=["status"])
        slots = GaugeMetricFamily(
            "agl_runner_slots", "Slots of live runners (idle or busy), by state", labels=["state"]
        )
        busy = idle = 0
        for status, (n, total, used) in sorted(f.workers_by_status.items()):
            workers.add_metric([status], n)
            if status in ("idle", "busy"):
                busy, idle = busy + used, idle + max(0, total - used)
        slots.add_metric(["busy"], busy)
        slots.add_metric(["idle"], idle)
        yield workers
        yield slots


def _projection_metrics(statuses: list[ProjectionStatus]) -> Iterator[Metric]:
    labels = ["projection", "generation", "state"]
    lag = GaugeMetricFamily("agl_projection_lag_events", "Committed records not yet applied", labels=labels)
    lag_s = GaugeMetricFamily(
        "agl_projection_lag_seconds", "Age of the oldest record not yet applied (0 without lag)", labels=labels
    )
    rate = GaugeMetricFamily("agl_projection_events_per_second", "Recent apply rate", labels=labels)
    dead = GaugeMetricFamily("agl_projection_dead_letters", "Records parked as dead letters", labels=labels)
    stalled = GaugeMetricFamily("agl_projection_stalled", "1 when lagging without progress", labels=labels)
    consumed = GaugeMetricFamily(
        "agl_projection_position",
        "Records consumed: the sum over partitions of the next offset to apply (transaction markers included)",
        labels=labels,
    )
    progress = GaugeMetricFamily(
        "agl_projection_rebuild_progress_ratio",
        "A building generation's applied share of the partitions it has started (positions over high watermarks)",
        labels=["projection", "generation"],
    )
    for s in statuses:
        values = [s.name, str(s.generation), s.state]
        lag.add_metric(values, s.lag)
        lag_s.add_metric(values, s.lag_seconds)
        rate.add_metric(values, s.events_per_s)
        dead.add_metric(values, s.dead_letters)
        stalled.add_metric(values, 1.0 if s.stalled else 0.0)
        consumed.add_metric(values, sum(p.position for p in s.partitions))
        if s.state == "building":
            ends = sum(p.high_watermark for p in s.partitions)
            done = sum(p.position for p in s.partitions)
            # Before its first batch a building generation has no positions: nothing applied yet is 0, not done.
            progress.add_metric([s.name, str(s.generation)], done / ends if ends else 0.0)
    yield from (lag, lag_s, rate, dead, stalled, consumed, progress)
