"""Rate limits per client and route family (429 + Retry-After), the URL bound (414), and clients backing off."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from agl.app import create_app
from core.errors import ConfigError
from producers.client import AsyncClient, RetryPolicy
from producers.rate_limit import Limit, TokenBuckets, parse_limits
from producers.route_families import FAMILIES, route_family
from tests.producers.conftest import api_settings


# -- families -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "family"),
    [
        ("POST", "/v1/rollouts", "publish"),
        ("POST", "/v1/rollouts/ro-1/cancel", "publish"),
        ("POST", "/v1/resources", "publish"),
        ("DELETE", "/v1/knowledge/documents/doc-1", "publish"),
        ("POST", "/v1/agl/queues/rollouts/enqueue", "publish"),
        ("POST", "/v1/rollouts/dequeue", "run"),
        ("POST", "/v1/rollouts/ro-1/attempts/at-1/finish", "run"),
        ("POST", "/v1/workers/w-1/heartbeat", "run"),
        ("POST", "/v1/agl/rollouts/ro-1/attempts/at-1", "run"),
        ("GET", "/task", "run"),
        ("POST", "/v1/spans", "traces"),
        ("POST", "/v1/traces", "traces"),
        ("POST", "/v1/agl/spans/next", "traces"),
        ("POST", "/v1/chat/completions", "llm"),
        ("POST", "/rollout/ro-1/attempt/at-1/v1/completions", "llm"),
        ("POST", "/v1/rollouts/wait", "read"),
        ("POST", "/v1/agl/rollouts/search", "read"),
        ("GET", "/v1/rollouts/ro-1/trace", "read"),
        ("HEAD", "/v1/triplets", "read"),
        ("GET", "/healthz", "health"),
        ("GET", "/readyz", "health"),
        ("PUT", "/v1/anything", "admin"),
    ],
)
def test_each_route_has_the_family_of_its_callers(method: str, path: str, family: str) -> None:
    assert route_family(method, path) == family


def test_every_documented_operation_falls_in_a_family() -> None:
    app = create_app(api_settings("127.0.0.1:9", "postgresql://nobody@127.0.0.1:9/none", ""))
    operations = [(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops]
    assert len(operations) > 60
    families = {route_family(m, p.replace("{", "x").replace("}", "")) for m, p in operations}
    assert families == set(FAMILIES) - {"admin"}  # every family but the catch-all is used by a real route


# -- buckets ------------------------------------------------------------------------------------------------------
def test_a_bucket_allows_its_burst_then_its_rate_and_says_how_long_to_wait() -> None:
    now = [100.0]
    buckets = TokenBuckets(Limit(rate=2.0, burst=3.0), clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # empty: one token takes 1/rate
    assert buckets.take("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert buckets.take("a") == 0.0  # refilled at 2/s
    now[0] += 100
    assert [buckets.take("a") for _ in range(4)][-1] > 0  # never more than the burst, however long the pause


def test_the_number_of_buckets_is_bounded() -> None:
    buckets = TokenBuckets(Limit(rate=1.0, burst=1.0), max_buckets=10)
    for i in range(1000):
        buckets.take(f"client-{i}")
    assert len(buckets._buckets) == 10


@pytest.mark.parametrize("text", ["publish", "nope=1:2", "health=1", "read=x", "read=0", "read=1:0", "read=nan"])
def test_a_malformed_setting_is_refused_with_its_reason(text: str) -> None:
    with pytest.raises(ConfigError, match="AGL_RATE_LIMITS"):
        parse_limits(text)


def test_limits_parse_with_a_default_burst() -> None:
    assert parse_limits(" publish=50:100, llm=0.5 ,") == {"publish": Limit(50, 100), "llm": Limit(0.5, 1.0)}
    assert parse_limits("") == {}


# -- through the API ----------------------------------------------------------------------------------------------
@pytest_asyncio.fixture(loop_scope="session")
async def limited_app(kafka_bootstrap: str, kafka_topics: str, pg_url: str) -> AsyncIterator[FastAPI]:
    settings = api_settings(
        kafka_bootstrap, pg_url, kafka_topics, rate_limits="read=1:2,publish=1:2", api_max_url_bytes=1024
    )
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60):
        yield application


def _client(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", headers=headers)


@pytest.mark.kafka
@pytest.mark.pg
async def test_a_client_over_its_limit_gets_429_with_retry_after_and_others_are_not_affected(
    limited_app: FastAPI,
) -> None:
    async with _client(limited_app, **{"X-API-Key": "key-one"}) as one, _client(limited_app) as anonymous:
        answers = [(await one.get("/v1/projections")) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        refused = answers[-1]
        assert refused.headers["retry-after"] == "1"
        assert "rate limit" in refused.json()["detail"]
        # Another key, and the address without a key, have buckets of their own; health is never limited.
        async with _client(limited_app, Authorization="Bearer key-two") as two:
            assert (await two.get("/v1/projections")).status_code == 200
        assert (await anonymous.get("/v1/projections")).status_code == 200
        assert [(await one.get("/healthz")).status_code for _ in range(5)] == [200] * 5
        # Other families of the same key have buckets of their own.
        assert (await one.post("/v1/rollouts", json={"input": {"q": 1}})).status_code == 202


@pytest.mark.kafka
@pytest.mark.pg
async def test_our_client_waits_out_a_429_and_then_gets_its_answer(limited_app: FastAPI) -> None:
    http = _client(limited_app, **{"X-API-Key": "patient"})
    async with AsyncClient("http://api", http=http, retry=RetryPolicy(attempts=4, backoff_s=0.01)) as client:
        started = time.monotonic()
        accepted = [await client.enqueue_rollout({"q": i}) for i in range(4)]
        waited = time.monotonic() - started
    assert len({a.rollouts[0].rollout_id for a in accepted}) == 4
    assert waited >= 1.9  # burst 2 at 1/s: the third and fourth waited out Retry-After: 1, not the 10 ms backoff


@pytest.mark.kafka
@pytest.mark.pg
async def test_an_overlong_query_string_is_answered_414(limited_app: FastAPI) -> None:
    async with _client(limited_app, **{"X-API-Key": "long"}) as client:
        answer = await client.get("/v1/rollouts", params={"status": "x" * 2000})
        assert answer.status_code == 414
        assert "query string" in answer.json()["detail"]
