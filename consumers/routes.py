"""``GET /v1/projections``: status and health of every projection (high watermarks come from the broker)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request

from consumers.status import ProjectionStatus, gather_status

#: How long one gathering of statuses (a PostgreSQL read plus a broker round trip) serves every request.
STATUS_TTL_S = 1.0


class StatusCache:
    """Projection statuses shared by every request for ``ttl_s``: a dashboard polling ``/readyz`` or
    ``/v1/projections`` many times a second costs one broker round trip a second, not one consumer per request.
    Concurrent requests wait for the one gathering in flight."""

    def __init__(self, ttl_s: float = STATUS_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.gathered = 0
        self._at = -float("inf")
        self._value: list[ProjectionStatus] = []
        self._lock = asyncio.Lock()

    async def get(self, request: Request) -> list[ProjectionStatus]:
        async with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                async with request.app.state.pool.connection() as conn:
                    self._value = await gather_status(conn, request.app.state.settings.kafka_bootstrap)
                self._at = time.monotonic()
                self.gathered += 1
            return self._value


def status_cache(request: Request) -> StatusCache:
    cache: StatusCache | None = getattr(request.app.state, "status_cache", None)
    if cache is None:
        cache = request.app.state.status_cache = StatusCache()
    return cache


router = APIRouter(
    prefix="/v1/projections",
    tags=["projections"],
    responses={503: {"description": "PostgreSQL or the broker did not answer in time: retry"}},
)


@router.get("")
async def projections_route(request: Request) -> list[dict[str, Any]]:
    """Per projection and partition: position, high watermark, lag (events, seconds), rate, dead letters, stalls."""
    return [s.as_dict() for s in await status_cache(request).get(request)]


async def stalled_projections(request: Request) -> list[str]:
    """Names of stalled projections, for the readiness check."""
    statuses = await status_cache(request).get(request)
    return [f"{s.name} (lag {s.lag}, no progress since {s.last_progress_at})" for s in statuses if s.stalled]
