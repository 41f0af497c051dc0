"""The command API in-process (ASGI transport, real lifespan) on the test's broker topics and database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from agl.app import create_app
from agl.config import Settings


def api_settings(kafka_bootstrap: str, pg_url: str, prefix: str, **overrides: Any) -> Settings:
    return Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, **overrides)


@pytest_asyncio.fixture(loop_scope="session")
async def app(kafka_bootstrap: str, kafka_topics: str, pg_url: str) -> AsyncIterator[FastAPI]:
    """The app, its lifespan running (publisher started, command tables migrated)."""
    application = create_app(api_settings(kafka_bootstrap, pg_url, kafka_topics))
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60):
        yield application


@pytest_asyncio.fixture(loop_scope="session")
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        yield client
