"""Read routes over HTTP (in-process ASGI, real lifespan): rollouts, read-your-writes, projection status."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from asgi_lifespan import LifespanManager

from agl.app import create_app
from agl.config import Settings
from consumers.status import gather_status
from consumers.worker import ProjectionWorker
from projections.rollouts import PROJECTION as ROLLOUTS
from schemas import TOPIC_BY_EVENT, Position, encode, to_token
from tests.consumers.helpers import cancelled, lifecycle, retrying, running, wait_for_total

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


async def publish_with_token(bootstrap: str, prefix: str, events) -> str:
    """Publish and return the position token a command would answer with."""
    positions = []
    async with AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all") as producer:
        for event in events:
            value, headers = encode(event)
            topic = TOPIC_BY_EVENT[type(event)].full_name(prefix)
            meta = await producer.send_and_wait(topic, value, key=event.key(), headers=headers)
            positions.append(Position(topic=meta.topic, partition=meta.partition, offset=meta.offset))
    return to_token(positions)


@pytest.fixture
async def api(kafka_bootstrap, kafka_topics, pg_url):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        yield client


def worker(kafka_bootstrap, pg_url, prefix) -> ProjectionWorker:
    return ProjectionWorker(
        ROLLOUTS, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False
    )


async def test_rollouts_are_listed_filtered_and_read_after_a_token(api, kafka_bootstrap, kafka_topics, pg_url):
    events = [*lifecycle(1), *lifecycle(2, outcome="failed"), *retrying(3), *cancelled(4), *lifecycle(5)]
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        token = await publish_with_token(kafka_bootstrap, kafka_topics, events)
        # No sleep, no polling: the read waits until the projection has applied the token's positions.
        page = (await api.get("/v1/rollouts", params={"after": token, "limit": 2})).json()
        assert page["total"] == 5 and [r["rollout_id"] for r in page["items"]] == ["ro-00001", "ro-00002"]
        statuses = (await api.get("/v1/rollouts", params={"status": ["failed", "cancelled"]})).json()
        assert sorted((r["rollout_id"], r["status"]) for r in statuses["items"]) == [
            ("ro-00002", "failed"), ("ro-00004", "cancelled"),
        ]  # fmt: skip
        detail = (await api.get("/v1/rollouts/ro-00003")).json()
        assert detail["status"] == "requeuing" and [a["status"] for a in detail["attempts"]] == ["failed"]
        assert (await api.get("/v1/rollouts/ro-nope")).status_code == 404
        projections = (await api.get("/v1/projections")).json()
        (rollouts,) = [p for p in projections if p["name"] == "rollouts"]
        assert rollouts["lag"] == 0 and not rollouts["stalled"]
        assert sum(p["high_watermark"] for p in rollouts["partitions"]) == len(events)
        assert (await api.get("/readyz")).json()["checks"]["projections"] == "up"


async def test_a_token_not_applied_in_time_is_answered_clearly(api, kafka_bootstrap, kafka_topics, pg_url):
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        token = await publish_with_token(kafka_bootstrap, kafka_topics, lifecycle(1))
        await wait_for_total(pg_url, "rollouts_g1", len(lifecycle(1)))
    # A position beyond what exists: the projection cannot have applied it.
    far = token.split(",")[0].rsplit(":", 1)[0] + ":999999"
    answer = await api.get("/v1/rollouts", params={"after": far, "wait_ms": 200})
    assert answer.status_code == 503
    assert "has not applied the requested position" in answer.json()["detail"]
    assert (await api.get("/v1/rollouts", params={"after": "not-a-token"})).status_code == 400


async def test_lag_without_progress_is_reported_stalled(kafka_bootstrap, kafka_topics, pg_url):
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        await publish_with_token(kafka_bootstrap, kafka_topics, lifecycle(1))
        await wait_for_total(pg_url, "rollouts_g1", len(lifecycle(1)))
    # The worker is gone; new events arrive: lag grows and nothing progresses.
    await publish_with_token(kafka_bootstrap, kafka_topics, lifecycle(2))
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        (status,) = await gather_status(conn, kafka_bootstrap, stall_after_s=0)
        assert status.lag == len(lifecycle(2)) and status.stalled
        assert status.lag_seconds >= 0 and sum(p.high_watermark - p.position for p in status.partitions) == status.lag
        (fresh,) = await gather_status(conn, kafka_bootstrap)
        assert fresh.lag == len(lifecycle(2)) and not fresh.stalled  # progress was made moments ago


async def test_status_routes_share_one_gathering_a_second(api):
    # A dashboard polling readiness and projection status must not cost a broker consumer per request. A long
    # time-to-live keeps the assertion about sharing, not about how fast ten requests run on a busy machine.
    from consumers.routes import StatusCache

    api._transport.app.state.status_cache = StatusCache(ttl_s=600)
    for _ in range(5):
        assert (await api.get("/v1/projections")).status_code == 200
        assert (await api.get("/readyz")).status_code in (200, 503)
    transport = api._transport  # the ASGI app behind the client
    cache = transport.app.state.status_cache
    assert cache.gathered == 1
