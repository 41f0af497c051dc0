"""An API with API keys on (``AGL_AUTH=keys``; the rest of the suite runs with ``off``), on a real port, and keys
of every scope, created through the store as `agl keys create` does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest_asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from agl.app import create_app
from producers.auth.keys import NewKey, create_key, migrate_api_keys
from producers.auth.scopes import SCOPES
from producers.idempotency import migrate_commands
from producers.publisher import EventPublisher
from tests.producers.conftest import api_settings
from tests.producers.test_llm_proxy import serving


@dataclass
class KeyedApi:
    app: FastAPI
    url: str
    #: one key per scope, by scope
    keys: dict[str, NewKey]
    pg_url: str
    prefix: str


async def new_key(pg_url: str, prefix: str, scopes: list[str], name: str = "") -> NewKey:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await migrate_commands(conn)
        await migrate_api_keys(conn)
        return await create_key(conn, EventPublisher("", topic_prefix=prefix), scopes, name=name, created_by="test")


@contextlib.asynccontextmanager
async def keyed_api(kafka_bootstrap: str, pg_url: str, prefix: str, **overrides: Any) -> AsyncIterator[KeyedApi]:
    app = create_app(api_settings(kafka_bootstrap, pg_url, prefix, auth="keys", **overrides))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60), serving(app) as url:
        keys: dict[str, NewKey] = {s: await new_key(pg_url, prefix, [s], name=f"only {s}") for s in SCOPES}
        yield KeyedApi(app, url, keys, pg_url, prefix)


@pytest_asyncio.fixture(loop_scope="session")
async def api_with_keys(kafka_bootstrap: str, kafka_topics: str, pg_url: str) -> AsyncIterator[KeyedApi]:
    async with keyed_api(kafka_bootstrap, pg_url, kafka_topics) as api:
        yield api
