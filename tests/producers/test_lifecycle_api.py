"""The runner protocol over HTTP (in-process ASGI, real Kafka and PostgreSQL): claims decided once, reports,
cancel, the watchdog's decisions, and the read model applying them."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import psycopg
import pytest

from consumers.worker import ProjectionWorker
from producers import lifecycle_endings
from producers.publisher import EventPublisher
from projections.rollouts import PROJECTION as ROLLOUTS
from tests.consumers.helpers import running

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


def rollouts_worker(kafka_bootstrap, pg_url, prefix) -> ProjectionWorker:
    return ProjectionWorker(
        ROLLOUTS, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False
    )


async def enqueue(api, *items) -> str:
    answer = await api.post("/v1/rollouts", json=list(items))
    assert answer.status_code == 202, answer.text
    position: str = answer.json()["position"]
    return position


async def dequeue(api, worker_id: str, limit: int = 1, headers=None, **extra) -> list[dict[str, Any]]:
    body = {"worker_id": worker_id, "limit": limit, **extra}
    answer = await api.post("/v1/rollouts/dequeue", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    claims: list[dict[str, Any]] = answer.json()["claims"]
    return claims


async def report(api, claim: dict[str, Any], kind: str, worker_id: str = "w1", **body) -> dict[str, Any]:
    url = f"/v1/rollouts/{claim['rollout_id']}/attempts/{claim['attempt_id']}/{kind}"
    answer = await api.post(url, json={"worker_id": worker_id, **body})
    assert answer.status_code == 200, answer.text
    verdict: dict[str, Any] = answer.json()
    return verdict


async def read_until(api, rollout_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = await api.get(f"/v1/rollouts/{rollout_id}")
        found: dict[str, Any] = answer.json()
        if answer.status_code == 200 and found["status"] == status:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{rollout_id} is {answer.text}, not {status}")
        await asyncio.sleep(0.05)


async def test_claims_follow_priority_then_enqueue_order_and_capabilities(api):
    await enqueue(
        api,
        {"rollout_id": "ro-low", "input": 1},
        {"rollout_id": "ro-high", "input": 2, "priority": 5},
        {"rollout_id": "ro-gpu", "input": 3, "priority": 9, "required_capabilities": ["gpu"]},
        {"rollout_id": "ro-low2", "input": 4},
    )
    claims = await dequeue(api, "w1", limit=10)
    assert [c["rollout_id"] for c in claims] == ["ro-high", "ro-low", "ro-low2"]
    assert all(c["sequence_id"] == 1 and c["attempt_id"].startswith("at-") for c in claims)
    assert await dequeue(api, "w1") == []
    (gpu,) = await dequeue(api, "w2", capabilities=["gpu", "python"])
    assert gpu["rollout_id"] == "ro-gpu" and gpu["input"] == 3


async def test_a_rollout_runs_to_succeeded_and_the_read_model_shows_the_decisions(api, app, kafka_bootstrap, pg_url):
    prefix = app.state.settings.topic_prefix
    async with running(rollouts_worker(kafka_bootstrap, pg_url, prefix)):
        await enqueue(api, {"rollout_id": "ro-1", "input": {"q": "2+2"}})
        (claim,) = await dequeue(api, "w1")
        verdict = await report(api, claim, "running")
        assert verdict == {"rollout_status": "running", "attempt_status": "running", "cancelled": False, "late": False}
        assert (await report(api, claim, "heartbeat"))["cancelled"] is False
        verdict = await report(api, claim, "finish", status="succeeded")
        assert verdict["rollout_status"] == "succeeded"
        # The same report again is a resend: same verdict, nothing new recorded.
        assert await report(api, claim, "finish", status="succeeded") == verdict
        rollout = await read_until(api, "ro-1", "succeeded")
        (attempt,) = rollout["attempts"]
        assert (attempt["status"], attempt["worker_id"], attempt["sequence_id"]) == ("succeeded", "w1", 1)
        assert rollout["attempt_count"] == 1 and rollout["end_time"] is not None
        assert rollout["latest_attempt"]["attempt_id"] == claim["attempt_id"]
        (only,) = (await api.get("/v1/rollouts/ro-1/attempts")).json()
        assert (only["attempt_id"], only["status"], only["late_reports"]) == (claim["attempt_id"], "succeeded", 0)
        assert (await api.get("/v1/rollouts/ro-nope/attempts")).status_code == 404
        listed = (await api.get("/v1/rollouts")).json()["items"]
        assert listed[0]["latest_attempt"]["status"] == "succeeded"


async def test_reports_about_unknown_or_foreign_attempts_are_refused(api):
    await enqueue(api, {"rollout_id": "ro-1", "input": 1})
    (claim,) = await dequeue(api, "w1")
    foreign = await api.post(f"/v1/rollouts/ro-1/attempts/{claim['attempt_id']}/running", json={"worker_id": "w2"})
    assert foreign.status_code == 409
    unknown = await api.post("/v1/rollouts/ro-1/attempts/at-nope/running", json={"worker_id": "w1"})
    assert unknown.status_code == 404
    assert (await api.post("/v1/rollouts/ro-nope/cancel")).status_code == 404


async def test_a_failed_attempt_is_retried_by_the_rules_then_fails(api):
    config = {"max_attempts": 2, "retry_condition": ["failed"]}
    await enqueue(api, {"rollout_id": "ro-1", "input": 1, "config": config})
    (first,) = await dequeue(api, "w1")
    await report(api, first, "running")
    verdict = await report(api, first, "finish", status="failed", error={"type": "ValueError", "message": "no"})
    assert verdict["rollout_status"] == "requeuing"
    (second,) = await dequeue(api, "w1")
    assert second["rollout_id"] == "ro-1" and second["sequence_id"] == 2
    verdict = await report(api, second, "finish", status="failed")
    assert verdict["rollout_status"] == "failed"
    assert await dequeue(api, "w1") == []


async def test_cancel_stops_the_running_attempt_and_is_final(api):
    await enqueue(api, {"rollout_id": "ro-1", "input": 1})
    (claim,) = await dequeue(api, "w1")
    await report(api, claim, "running")
    answer = await api.post("/v1/rollouts/ro-1/cancel", json={"reason": "enough"})
    assert answer.status_code == 202 and answer.json()["event_ids"]
    verdict = await report(api, claim, "heartbeat")
    assert verdict["cancelled"] is True and verdict["rollout_status"] == "cancelled"
    late = await report(api, claim, "finish", status="succeeded")
    assert late["late"] is True and late["rollout_status"] == "cancelled"
    again = await api.post("/v1/rollouts/ro-1/cancel")
    assert again.status_code == 202 and again.json()["event_ids"] == []


async def test_the_watchdog_times_out_an_attempt_and_a_late_finish_changes_nothing(api, app, pg_url):
    config = {"timeout_seconds": 0.2, "max_attempts": 2, "retry_condition": ["timeout"]}
    await enqueue(api, {"rollout_id": "ro-1", "input": 1, "config": config})
    (first,) = await dequeue(api, "w1")
    await report(api, first, "running")
    await asyncio.sleep(0.3)
    publisher: EventPublisher = app.state.publisher
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        assert await lifecycle_endings.expire_overdue(conn, publisher, {"source": "/agl/watchdog"}) == 1
        assert await lifecycle_endings.expire_overdue(conn, publisher, {"source": "/agl/watchdog"}) == 0
    late = await report(api, first, "finish", status="succeeded")
    assert late == {"rollout_status": "requeuing", "attempt_status": "timeout", "cancelled": True, "late": True}
    (second,) = await dequeue(api, "w2")
    assert second["sequence_id"] == 2
    assert (await report(api, second, "finish", status="succeeded", worker_id="w2"))["rollout_status"] == "succeeded"


async def test_concurrent_workers_never_claim_one_rollout_twice(api):
    await enqueue(api, *({"rollout_id": f"ro-{i:04d}", "input": i} for i in range(300)))

    async def drain(worker_id: str) -> list[str]:
        got: list[str] = []
        while claims := await dequeue(api, worker_id, limit=7):
            got.extend(c["rollout_id"] for c in claims)
        return got

    results = await asyncio.gather(*(drain(f"w{n}") for n in range(8)))
    counts = Counter(r for claimed in results for r in claimed)
    assert len(counts) == 300 and set(counts.values()) == {1}


async def test_a_long_poll_wakes_when_a_rollout_is_enqueued(api):
    waiter = asyncio.create_task(dequeue(api, "w1", wait_ms=10_000))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    started = asyncio.get_running_loop().time()
    await enqueue(api, {"rollout_id": "ro-1", "input": 1})
    (claim,) = await asyncio.wait_for(waiter, 5)
    assert claim["rollout_id"] == "ro-1"
    assert asyncio.get_running_loop().time() - started < 3


async def test_a_busy_pool_answers_503_with_retry_after(kafka_bootstrap, kafka_topics, pg_url):
    import httpx
    from asgi_lifespan import LifespanManager

    from agl.app import create_app
    from tests.producers.conftest import api_settings

    app = create_app(api_settings(kafka_bootstrap, pg_url, kafka_topics, api_pool_size=1, api_pool_timeout_s=0.3))
    async with (
        LifespanManager(app, startup_timeout=60),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
    ):
        async with app.state.pool.connection():  # the one connection is taken
            answer = await api.post("/v1/rollouts", json={"input": 1})
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "1", answer.text
        assert (await api.post("/v1/rollouts", json={"input": 1})).status_code == 202


async def test_worker_capabilities_are_bounded_at_the_door(api):
    too_long = {"worker_id": "w1", "capabilities": ["x" * 201]}
    assert (await api.post("/v1/workers/register", json=too_long)).status_code == 422
    empty = {"worker_id": "w1", "capabilities": [""], "limit": 1}
    assert (await api.post("/v1/rollouts/dequeue", json=empty)).status_code == 422
    assert (await api.post("/v1/workers/register", json={"worker_id": "a/b"})).status_code == 422


async def test_a_dequeue_resent_with_its_key_answers_its_claims_and_claims_no_more(api):
    await enqueue(api, *({"rollout_id": f"ro-key-{i}", "input": i} for i in range(6)))
    first = await dequeue(api, "w-key", limit=2, headers={"Idempotency-Key": "k-1"})
    assert [c["rollout_id"] for c in first] == ["ro-key-0", "ro-key-1"]
    # The same key again (the first answer was lost): the same claims, the same attempts, nothing more claimed.
    assert await dequeue(api, "w-key", limit=5, headers={"Idempotency-Key": "k-1"}) == first
    # One of them ends: a resend answers only the one still active.
    await report(api, first[0], "finish", worker_id="w-key", status="succeeded")
    assert await dequeue(api, "w-key", limit=2, headers={"Idempotency-Key": "k-1"}) == first[1:]
    # All of them ended: a resend answers none at once, without the long poll an unkeyed dequeue would wait.
    await report(api, first[1], "finish", worker_id="w-key", status="succeeded")
    started = asyncio.get_running_loop().time()
    assert await dequeue(api, "w-key", limit=2, wait_ms=20_000, headers={"Idempotency-Key": "k-1"}) == []
    assert asyncio.get_running_loop().time() - started < 10
    # A key is the worker's own: another worker with the same key claims for itself.
    assert [c["rollout_id"] for c in await dequeue(api, "w-other", headers={"Idempotency-Key": "k-1"})] == ["ro-key-2"]
    # Resends racing each other (the client gave up on the first): one claim, answered to both.
    racing = await asyncio.gather(
        *(dequeue(api, "w-key", limit=2, headers={"Idempotency-Key": "k-2"}) for _ in range(4))
    )
    assert [c["rollout_id"] for c in racing[0]] == ["ro-key-3", "ro-key-4"]
    assert all(answer == racing[0] for answer in racing)
    assert [c["rollout_id"] for c in await dequeue(api, "w-key", limit=5)] == ["ro-key-5"]


async def test_a_dequeue_key_that_is_not_a_printable_token_is_refused(api):
    for key in ("has space", "x" * 201, "tab\there"):
        answer = await api.post("/v1/rollouts/dequeue", json={"worker_id": "w-key"}, headers={"Idempotency-Key": key})
        assert answer.status_code == 422, (key, answer.text)
