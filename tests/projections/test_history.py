"""A rollout's history from the archive, and ``POST /v1/rollouts/wait`` over the rollouts read model."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from asgi_lifespan import LifespanManager

from agl.app import create_app
from agl.config import Settings
from projections.archive import PROJECTION as ARCHIVE
from projections.rollouts import PROJECTION as ROLLOUTS
from schemas import AttemptFinished, AttemptHeartbeat, AttemptStarted, Event, RolloutCancelled, RolloutEnqueued
from schemas.topics import ROLLOUTS as ROLLOUTS_TOPIC
from tests.consumers.helpers import lifecycle, publish_raw, running
from tests.fixtures.histories import at, history
from tests.projections.test_resources import api, publish_with_token, worker_for

pytestmark = [pytest.mark.kafka, pytest.mark.pg]
__all__ = ["api"]  # a fixture, used by name


async def test_history_is_in_log_order_per_partition_and_interleaved_by_record_time(
    api, kafka_bootstrap, kafka_topics, pg_url
):
    rid, aid = "ro-h", "at-h-1"
    # Three publishes apart in time: the rollouts topic, then the attempts topic, then the rollouts topic again.
    # Sorted by topic the attempts would come first; the history interleaves them as they were published.
    steps: list[list[Event]] = [
        [RolloutEnqueued(rollout_id=rid, input=1, occurred_at=at(0))],
        [
            AttemptStarted(rollout_id=rid, attempt_id=aid, sequence_id=1, occurred_at=at(1)),
            AttemptHeartbeat(rollout_id=rid, attempt_id=aid, occurred_at=at(2)),
            AttemptFinished(rollout_id=rid, attempt_id=aid, status="failed", occurred_at=at(3)),
        ],
        [RolloutCancelled(rollout_id=rid, occurred_at=at(4))],
    ]
    tokens = []
    for events in steps:
        tokens.append(await publish_with_token(kafka_bootstrap, kafka_topics, events))
        await asyncio.sleep(0.05)
    await publish_with_token(kafka_bootstrap, kafka_topics, lifecycle(7))  # another rollout: not in this history
    # A record of this rollout no projection can decode is part of its history too.
    await publish_raw(kafka_bootstrap, ROLLOUTS_TOPIC.full_name(kafka_topics), b"\x00not json", key=rid.encode())
    async with running(worker_for(ARCHIVE, kafka_bootstrap, pg_url, kafka_topics)):
        answer = (await api.get(f"/v1/rollouts/{rid}/events", params={"after": tokens[-1]})).json()
        while answer["total"] < 6:  # the undecodable record has no token; it follows the cancel in its partition
            await asyncio.sleep(0.1)
            answer = (await api.get(f"/v1/rollouts/{rid}/events")).json()
    assert [e["type"] for e in answer["events"]] == [
        "rollout.enqueued", "attempt.started", "attempt.heartbeat", "attempt.finished", "rollout.cancelled", None,
    ]  # fmt: skip
    expected = [e for events in steps for e in events]
    assert [e["event_id"] for e in answer["events"][:5]] == [str(e.event_id) for e in expected]
    finished = answer["events"][3]
    assert finished["topic"] == f"{kafka_topics}agl.attempts.v1" and finished["version"] == 1
    assert finished["occurred_at"] == "2025-01-01T00:00:03Z" and finished["event"]["status"] == "failed"
    rollout_records = [e for e in answer["events"] if e["topic"].endswith("agl.rollouts.v1")]
    assert [e["offset"] for e in rollout_records] == sorted(e["offset"] for e in rollout_records)
    assert len({e["partition"] for e in rollout_records}) == 1
    assert answer["events"][-1]["event"] is None

    only = (await api.get(f"/v1/rollouts/{rid}/events", params={"type": "attempt.finished"})).json()
    assert [e["type"] for e in only["events"]] == ["attempt.finished"] and only["total"] == 1
    none = (await api.get(f"/v1/rollouts/{rid}/events", params={"type": "reward.assigned"})).json()
    assert none["events"] == [] and none["total"] == 0
    page = (await api.get(f"/v1/rollouts/{rid}/events", params={"limit": 2, "offset": 1})).json()
    assert [e["type"] for e in page["events"]] == ["attempt.started", "attempt.heartbeat"] and page["total"] == 6
    assert (await api.get("/v1/rollouts/ro-nope/events")).status_code == 404
    assert (await api.get("/v1/rollouts/ro-nope/events", params={"type": "rollout.enqueued"})).status_code == 404


async def test_wait_answers_when_all_are_terminal_or_at_the_timeout(api, kafka_bootstrap, kafka_topics, pg_url):
    done = lifecycle(1)
    runs = history("ro-00002").claim("w1").running()
    async with running(worker_for(ROLLOUTS, kafka_bootstrap, pg_url, kafka_topics)):
        token = await publish_with_token(kafka_bootstrap, kafka_topics, done + runs.events)
        assert (await api.get("/v1/rollouts/ro-00002", params={"after": token})).json()["status"] == "running"

        started = time.monotonic()
        body = {"rollout_ids": ["ro-00001", "ro-00002"], "timeout_s": 0.5}
        answer = (await api.post("/v1/rollouts/wait", json=body)).json()
        assert time.monotonic() - started >= 0.5
        assert [r["rollout_id"] for r in answer["rollouts"]] == ["ro-00001"] and answer["pending"] == ["ro-00002"]
        assert answer["rollouts"][0] == (await api.get("/v1/rollouts/ro-00001")).json()

        body = {"rollout_ids": ["ro-00002"], "timeout_s": 60}
        waiting = asyncio.create_task(api.post("/v1/rollouts/wait", json=body))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        started, published = time.monotonic(), len(runs.events)
        await publish_with_token(kafka_bootstrap, kafka_topics, runs.finish("succeeded").events[published:])
        answer = (await waiting).json()
        assert time.monotonic() - started < 10
        (rollout,) = answer["rollouts"]
        assert rollout["status"] == "succeeded" and [a["status"] for a in rollout["attempts"]] == ["succeeded"]
        assert answer["pending"] == []

    bad_bodies = [
        {"rollout_ids": [], "timeout_s": 1},
        {"rollout_ids": ["x"], "timeout_s": 301},
        {"rollout_ids": ["x"]},
        {"rollout_ids": ["no/slash"], "timeout_s": 1},
    ]
    for bad in bad_bodies:
        assert (await api.post("/v1/rollouts/wait", json=bad)).status_code == 422


async def test_waiting_holds_no_pooled_connection_while_it_sleeps(kafka_bootstrap, kafka_topics, pg_url):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    app = create_app(settings)
    async with (
        running(worker_for(ROLLOUTS, kafka_bootstrap, pg_url, kafka_topics)),
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=30) as client,
    ):
        token = await publish_with_token(kafka_bootstrap, kafka_topics, lifecycle(1)[:1])
        await client.get("/v1/rollouts/ro-00001", params={"after": token})
        # More waiters than the pool has connections (10), none of them done for 2 s.
        body = {"rollout_ids": ["ro-00001"], "timeout_s": 2}
        waiters = [asyncio.create_task(client.post("/v1/rollouts/wait", json=body)) for _ in range(15)]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        assert (await client.get("/v1/rollouts/ro-00001")).json()["status"] == "queuing"
        assert time.monotonic() - started < 1.0, "a read had to wait for a waiter's connection"
        assert all(not w.done() for w in waiters)
        answers = await asyncio.gather(*waiters)
        assert all(a.json() == {"rollouts": [], "pending": ["ro-00001"]} for a in answers)
