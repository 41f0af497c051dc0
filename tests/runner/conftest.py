"""The API in-process (ASGI transport, real lifespan, real Kafka and PostgreSQL) with the read models the
runner's reads need (rollouts, resources, workers) projected while a test runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest_asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from agl.app import create_app
from agl.config import Settings
from consumers.worker import ProjectionWorker
from producers.client import AsyncClient, RetryPolicy
from projections.resources import PROJECTION as RESOURCES
from projections.rollouts import PROJECTION as ROLLOUTS
from projections.workers import PROJECTION as WORKERS
from tests.consumers.helpers import running


def api_settings(kafka_bootstrap: str, pg_url: str, prefix: str) -> Settings:
    return Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix)


@pytest_asyncio.fixture(loop_scope="session")
async def app(kafka_bootstrap: str, kafka_topics: str, pg_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(api_settings(kafka_bootstrap, pg_url, kafka_topics))
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60):
        yield application


@contextlib.asynccontextmanager
async def projected(kafka_bootstrap: str, pg_url: str, prefix: str) -> AsyncIterator[None]:
    """The rollouts, resources and workers projections running for the block."""
    async with contextlib.AsyncExitStack() as stack:
        for projection in (ROLLOUTS, RESOURCES, WORKERS):
            worker = ProjectionWorker(
                projection, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False
            )
            await stack.enter_async_context(running(worker))
        yield


@pytest_asyncio.fixture(loop_scope="session")
async def client(app: FastAPI, kafka_bootstrap: str, kafka_topics: str, pg_url: str) -> AsyncIterator[AsyncClient]:
    """The SDK client a runner uses, on the in-process API, one try per call (the runner retries)."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=60)
    async with (
        projected(kafka_bootstrap, pg_url, kafka_topics),
        AsyncClient("http://api", http=http, retry=RetryPolicy(attempts=1)) as sdk,
    ):
        yield sdk


async def until(predicate: Callable[[], Awaitable[Any]], timeout_s: float = 30.0, every_s: float = 0.05) -> Any:
    """What ``predicate()`` answers once it answers something true (fails the test after ``timeout_s``)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (result := await predicate()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(every_s)
    return result


def rollout_items(prefix: str, count: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"rollout_id": f"{prefix}-{i:03d}", "input": {"n": i}, **fields} for i in range(count)]
