"""How the command API plugs into the application built by ``agl.app.create_app``."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from producers.commands import ONE_OR_MANY_MODELS, router
from producers.http import BodySizeLimit, add_schemas, install_error_answers
from producers.idempotency import migrate_commands
from producers.publisher import EventPublisher

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI
    from psycopg_pool import AsyncConnectionPool

    from agl.config import Settings


def mount_commands(app: FastAPI, settings: Settings) -> None:
    """Add the command routes, the body size limit (413) and the 422 answers naming each failing field."""
    app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    install_error_answers(app)
    add_schemas(app, ONE_OR_MANY_MODELS)


@contextlib.asynccontextmanager
async def running_commands(app: FastAPI, settings: Settings, pool: AsyncConnectionPool[Any]) -> AsyncIterator[None]:
    """For the app's lifespan: the command tables exist and the publisher runs (stopped, flushed, on exit)."""
    assert settings.kafka_bootstrap is not None
    async with pool.connection() as conn:
        await migrate_commands(conn)
    async with EventPublisher(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix) as publisher:
        app.state.publisher = publisher
        yield
