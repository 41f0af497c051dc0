"""The API in-process (real lifespan, Kafka, PostgreSQL) for the observability tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from agl.app import create_app
from tests.producers.conftest import api_settings


@pytest_asyncio.fixture(loop_scope="session")
async def app(kafka_bootstrap: str, kafka_topics: str, pg_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(api_settings(kafka_bootstrap, pg_url, kafka_topics))
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60):
        yield application


@pytest_asyncio.fixture(loop_scope="session")
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=60) as client:
        yield client
