"""The whole API, as `agl up` serves it, for schemathesis: real lifespan, real Kafka topics, a real database whose
projections all have an active (empty) generation, so the read routes run their queries instead of answering 503."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
import schemathesis
from asgi_lifespan import LifespanManager
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi as schemathesis_asgi

from agl.app import create_app
from projections.registry import all_projections
from projections.tracking import ensure_active_generation
from tests.producers.conftest import api_settings

#: Generated cases per operation in the fuzzing phase (hypothesis' max_examples): bounded so that the whole API
#: is fuzzed in well under three minutes on two cores.
EXAMPLES_PER_OPERATION = 25


@pytest_asyncio.fixture(loop_scope="session")
async def projected_db(pg_url: str) -> str:
    """The test's database with every projection's tables, as the stack's workers create them at start."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        for projection in all_projections().values():
            await ensure_active_generation(conn, projection)
    return pg_url


def fuzz_config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "generation": {"max-examples": EXAMPLES_PER_OPERATION, "mode": "all"},
            # The coverage phase enumerates boundary values per parameter (hundreds of cases on a wide body) and
            # has no bound: the fuzzing phase with a fixed budget keeps the run short and its size predictable.
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        }
    )


@pytest.fixture
def api_schema(kafka_bootstrap: str, kafka_topics: str, projected_db: str) -> Iterator[Any]:
    """The OpenAPI document fetched from the app itself; schemathesis runs the app's lifespan on its own loop
    (one start for the whole run), and it is stopped here before the database is dropped."""
    app = create_app(api_settings(kafka_bootstrap, projected_db, kafka_topics))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=fuzz_config())
    try:
        yield schema
    finally:
        schemathesis_asgi.shutdown_lifespans()


@pytest_asyncio.fixture(loop_scope="session")
async def api(kafka_bootstrap: str, kafka_topics: str, projected_db: str) -> AsyncIterator[httpx.AsyncClient]:
    """The same app in-process on the test's loop, with a small body and URL limit to reach 413 and 414 cheaply."""
    settings = api_settings(kafka_bootstrap, projected_db, kafka_topics, api_max_body_bytes=4096)
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=60) as client,
    ):
        yield client
