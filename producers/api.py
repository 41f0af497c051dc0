"""How the command API plugs into the application built by ``agl.app.create_app``."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute

from producers.commands import ONE_OR_MANY_MODELS, router
from producers.http import (
    COMMAND_RESPONSES,
    CONFLICT_RESPONSES,
    NOT_FOUND_RESPONSES,
    BodySizeLimit,
    add_schemas,
    install_error_answers,
)
from producers.idempotency import migrate_commands
from producers.input_guard import UnsafeInputGuard
from producers.lifecycle_routes import router as lifecycle_router
from producers.otlp import OtlpReceiver, document_receiver
from producers.outbox import OutboxRelay
from producers.publisher import EventPublisher

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI
    from psycopg_pool import AsyncConnectionPool
    from starlette.routing import BaseRoute

    from core.config import Settings


def mount_commands(app: FastAPI, settings: Settings) -> None:
    """Add the command routes, the body size limit (413) and the 422 answers naming each failing field.

    The unsafe-input guard covers every route of the app (reads too); the size limit wraps it, so an oversized
    body is refused before the guard buffers it (the middleware added last runs first).
    """
    _declare_route_responses(router.routes)
    app.include_router(router, responses=COMMAND_RESPONSES)
    app.include_router(lifecycle_router, responses=COMMAND_RESPONSES)
    app.add_middleware(UnsafeInputGuard)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    # Outermost: OTLP/HTTP has its own size limit and error bodies (producers/otlp.py).
    app.add_middleware(OtlpReceiver, max_body_bytes=settings.otlp_max_body_bytes)
    document_receiver(app)
    install_error_answers(app)
    add_schemas(app, ONE_OR_MANY_MODELS)


#: What command routes answer besides the family's statuses (FastAPI cannot see which errors an endpoint raises).
ROUTE_RESPONSES: dict[tuple[str, str], dict[int | str, dict[str, Any]]] = {
    ("POST", "/v1/rollouts"): CONFLICT_RESPONSES,
    ("POST", "/v1/rollouts/{rollout_id}/cancel"): NOT_FOUND_RESPONSES,
}


def _declare_route_responses(routes: list[BaseRoute]) -> None:
    for route in routes:
        if isinstance(route, APIRoute):
            for method in route.methods or ():
                route.responses.update(ROUTE_RESPONSES.get((method, route.path), {}))


@contextlib.asynccontextmanager
async def running_commands(app: FastAPI, settings: Settings, pool: AsyncConnectionPool[Any]) -> AsyncIterator[None]:
    """For the app's lifespan: the command tables exist, the publisher and the outbox relay run (stopped, flushed,
    on exit)."""
    assert settings.kafka_bootstrap is not None
    assert settings.database_url is not None
    async with pool.connection() as conn:
        await migrate_commands(conn)
    async with (
        EventPublisher(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix) as publisher,
        OutboxRelay(
            settings.database_url,
            publisher,
            publish_wait_s=settings.api_publish_wait_s,
            retention_s=settings.outbox_retention_s,
        ) as relay,
    ):
        app.state.publisher = publisher
        app.state.relay = relay
        yield
