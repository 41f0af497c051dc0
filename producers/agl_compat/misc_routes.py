"""v0.3's statistics, and the OTLP signals it does not serve either (metrics, logs, profiles: 501)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from producers.agl_compat.deps import RESPONSES, Services, services
from producers.agl_compat.reads import count
from producers.otlp import status_response
from projections import resources as resources_model
from projections import rollouts as rollouts_model
from projections import spans as spans_model
from projections import workers as workers_model

router = APIRouter(prefix="/v1/agl", tags=["agent-lightning v0.3"], responses=RESPONSES)
otlp_router = APIRouter(prefix="/v1", tags=["agent-lightning v0.3"], responses=RESPONSES)
ServicesDep = Annotated[Services, Depends(services)]
_STARTED = time.monotonic()


@router.get("/statistics")
async def statistics(svc: ServicesDep) -> dict[str, Any]:
    """Counts from the read models (0 for one that is not running)."""
    pool = svc.pool
    return {
        "name": "AgentLightningES",
        "total_rollouts": await count(pool, rollouts_model.PROJECTION, "SELECT count(*) FROM rollouts"),
        "total_attempts": await count(pool, rollouts_model.PROJECTION, "SELECT count(*) FROM attempts"),
        "total_spans": await count(pool, spans_model.PROJECTION, "SELECT sum(span_count) FROM span_attempts"),
        "total_resources": await count(
            pool, resources_model.PROJECTION, "SELECT count(DISTINCT resources_id) FROM resources"
        ),
        "total_workers": await count(pool, workers_model.PROJECTION, "SELECT count(*) FROM workers"),
        "uptime": time.monotonic() - _STARTED,
    }


_NOT_SERVED: dict[int | str, dict[str, Any]] = {
    501: status_response("not served, as Agent Lightning's receiver: an exporter does not retry a 501")
}


# The OTLP receiver (a middleware) answers these paths before any route; the routes document that answer.
@otlp_router.post("/metrics", status_code=501, response_class=Response, responses=_NOT_SERVED)
@otlp_router.post("/logs", status_code=501, response_class=Response, responses=_NOT_SERVED)
@otlp_router.post("/development/profiles", status_code=501, response_class=Response, responses=_NOT_SERVED)
async def not_served() -> Response:
    """OTLP metrics, logs and profiles are not served (as theirs); traces are, at ``POST /v1/traces``."""
    return Response(status_code=501)
