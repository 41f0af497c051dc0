"""``GET /v1/projections``: status and health of every projection (high watermarks come from the broker)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from consumers.status import gather_status

router = APIRouter(prefix="/v1/projections", tags=["projections"])


@router.get("")
async def projections_route(request: Request) -> list[dict[str, Any]]:
    """Per projection and partition: position, high watermark, lag (events, seconds), rate, dead letters, stalls."""
    async with request.app.state.pool.connection() as conn:
        statuses = await gather_status(conn, request.app.state.settings.kafka_bootstrap)
    return [s.as_dict() for s in statuses]


async def stalled_projections(request: Request) -> list[str]:
    """Names of stalled projections, for the readiness check."""
    async with request.app.state.pool.connection() as conn:
        statuses = await gather_status(conn, request.app.state.settings.kafka_bootstrap)
    return [f"{s.name} (lag {s.lag}, no progress since {s.last_progress_at})" for s in statuses if s.stalled]
