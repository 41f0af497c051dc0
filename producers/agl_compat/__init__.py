"""A drop-in for Agent Lightning users: its v0.3 LightningStore REST API under ``/v1/agl`` and its v0.1 task
routes at the root, on our event log (every call becomes the same events as our own API's).
See docs/agent-lightning-migration.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


def mount_agl_compat(app: FastAPI) -> None:
    """Mount the v0.3 routes (``/v1/agl/...``, plus 501 for OTLP metrics, logs and profiles) and the v0.1 ones."""
    from producers.agl_compat import (
        misc_routes,
        queue_routes,
        resource_routes,
        rollout_routes,
        span_routes,
        v01_routes,
        worker_routes,
    )

    for module in (queue_routes, rollout_routes, span_routes, resource_routes, worker_routes, misc_routes):
        app.include_router(module.router)
    app.include_router(misc_routes.otlp_router)
    app.include_router(v01_routes.router)
