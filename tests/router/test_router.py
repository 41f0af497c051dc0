"""The assignment router end to end: decided once at enqueue and recorded, folded into a read model that a rebuild
reproduces, served by ``GET /v1/router``, learning from rewards, and switched off (free slots)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from agl.app import create_app
from consumers.rebuild import Rebuild
from projections.router import PROJECTION as ROUTER
from projections.workers import PROJECTION as WORKERS
from schemas import Event, RewardAssigned, RolloutEnqueued, RouterAssigned, WorkerRegistered, decode
from schemas.topics import ROLLOUTS
from tests.consumers.helpers import fetch_all, running
from tests.fixtures.records import read_records
from tests.producers.conftest import api_settings
from tests.projections.test_resources import publish_with_token, worker_for

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

PYTHON_TYPES = ("data_analyst", "qa_tester", "web_developer")


@contextlib.asynccontextmanager
async def api_with(
    kafka_bootstrap: str, pg_url: str, prefix: str, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings(kafka_bootstrap, pg_url, prefix, **overrides))
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        yield client


async def rollouts_topic(bootstrap: str, prefix: str, count: int) -> list[tuple[int, int, Event]]:
    records = await read_records(bootstrap, ROLLOUTS.full_name(prefix), count)
    return [(r.partition, r.offset, decode(r.value, r.headers)) for r in records]


def decided(rollout_id: str, agent_type: str, kind: str = "python") -> RouterAssigned:
    return RouterAssigned(
        rollout_id=rollout_id, task_kind=kind, agent_type=agent_type, candidates=PYTHON_TYPES,
        samples=dict.fromkeys(PYTHON_TYPES, 0.5), policy="thompson", prior_alpha=1, prior_beta=1,
        required_capabilities=("python", f"agent:{agent_type}"),
    )  # fmt: skip


async def table_text(pg_url: str, schema: str, table: str) -> list[tuple[Any, ...]]:
    return await fetch_all(pg_url, f"SELECT t::text FROM {schema}.{table} t ORDER BY 1")  # noqa: S608 - test names


def arms_of(body: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int, float, float]]:
    return {
        (a["task_kind"], a["agent_type"]): (a["assignments"], a["rewarded"], a["successes"], a["failures"])
        for a in body["arms"]
    }


async def test_the_decision_is_recorded_once_pins_the_rollout_and_its_reward_reaches_get_router(
    kafka_bootstrap, kafka_topics, pg_url
):
    async with (
        api_with(kafka_bootstrap, pg_url, kafka_topics) as api,
        running(worker_for(ROUTER, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        request = {"input": {"task": "sum a column"}, "metadata": {"task_kind": "python"}}
        first = await api.post("/v1/rollouts", json=request, headers={"Idempotency-Key": "k-1"})
        again = await api.post("/v1/rollouts", json=request, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 202, first.text
        assert again.json()["rollouts"][0]["created"] is False
        rollout_id = first.json()["rollouts"][0]["rollout_id"]

        # Neither routed: capabilities of its own, a kind the router does not know.
        others = [
            {"input": 1, "metadata": {"task_kind": "python"}, "required_capabilities": ["gpu"]},
            {"input": 2, "metadata": {"task_kind": "astrology"}},
        ]
        assert (await api.post("/v1/rollouts", json=others)).status_code == 202

        records = await rollouts_topic(kafka_bootstrap, kafka_topics, 4)
        decisions = [(p, o, e) for p, o, e in records if isinstance(e, RouterAssigned)]
        assert len(records) == 4 and len(decisions) == 1, "one decision, not re-made by the retry"
        (partition, offset, decision) = decisions[0]
        enqueued = {e.rollout_id: (p, o, e) for p, o, e in records if isinstance(e, RolloutEnqueued)}
        p, o, event = enqueued[rollout_id]
        assert (decision.rollout_id, decision.task_kind, decision.policy) == (rollout_id, "python", "thompson")
        assert decision.candidates == PYTHON_TYPES and set(decision.samples) == set(PYTHON_TYPES)
        assert decision.agent_type == max(decision.samples, key=decision.samples.__getitem__)
        assert (
            event.required_capabilities == decision.required_capabilities == ("python", f"agent:{decision.agent_type}")
        )
        assert partition == p and offset < o, "the decision precedes its rollout on the rollout's partition"
        assert sorted(e.required_capabilities for _, _, e in enqueued.values() if e.rollout_id != rollout_id) == [
            (),
            ("gpu",),
        ]

        # The enqueue's position covers its decision: read-your-writes on the router read model.
        body = (await api.get("/v1/router", params={"after": first.json()["position"]})).json()
        assert (body["policy"], body["prior_alpha"], body["prior_beta"]) == ("thompson", 1.0, 1.0)
        assert arms_of(body) == {("python", decision.agent_type): (1, 0, 0.0, 0.0)}
        assert body["arms"][0]["posterior_mean"] == 0.5 and body["arms"][0]["mean_reward"] is None

        # A span's reward is not the outcome; the rollout's first reward is, and a later one changes nothing.
        span_reward = {"rollout_id": rollout_id, "value": 0.0, "span_id": "b7ad6b7169203331"}
        rewards = [span_reward, {"rollout_id": rollout_id, "value": 0.75}, {"rollout_id": rollout_id, "value": 0.1}]
        rewarded = await api.post("/v1/rewards", json=rewards)
        assert rewarded.status_code == 202, rewarded.text
        body = (await api.get("/v1/router", params={"after": rewarded.json()["position"]})).json()
        assert arms_of(body) == {("python", decision.agent_type): (1, 1, 0.75, 0.25)}
        assert body["arms"][0]["posterior_mean"] == pytest.approx(1.75 / 3)
        assert (await api.get("/v1/router", params={"task_kind": "web"})).json()["arms"] == []


async def test_the_same_history_gives_the_same_router_state_after_a_rebuild(kafka_bootstrap, kafka_topics, pg_url):
    history: list[Event] = [
        RewardAssigned(rollout_id="ro-early", value=1.0),  # the outcome comes before its decision (other topic)
        decided("ro-early", "data_analyst"),
        decided("ro-1", "data_analyst"),
        RewardAssigned(rollout_id="ro-1", value=0.3),
        RewardAssigned(rollout_id="ro-1", value=0.9),  # a second outcome: the first stays
        decided("ro-2", "qa_tester"),
        RewardAssigned(rollout_id="ro-2", value=7.0),  # outside [0, 1]: clamped into the evidence
        RewardAssigned(rollout_id="ro-2", value=0.0, span_id="b7ad6b7169203331"),  # a span's: ignored
        decided("ro-3", "qa_tester"),  # no reward yet
        RewardAssigned(rollout_id="ro-unrouted", value=0.5),  # never routed: no arm
    ]
    history.append(history[1])  # a redelivered copy of a decision changes nothing
    async with running(worker_for(ROUTER, kafka_bootstrap, pg_url, kafka_topics)):
        token = await publish_with_token(kafka_bootstrap, kafka_topics, history)
        async with api_with(kafka_bootstrap, pg_url, kafka_topics) as api:
            body = (await api.get("/v1/router", params={"after": token})).json()
    assert arms_of(body) == {
        ("python", "data_analyst"): (2, 2, pytest.approx(1.3), pytest.approx(0.7)),
        ("python", "qa_tester"): (2, 1, 1.0, 0.0),
    }
    assert [a["reward_sum"] for a in body["arms"]] == [pytest.approx(1.3), 7.0]

    before = {t: await table_text(pg_url, "router_g1", t) for t in ROUTER.tables}
    rebuild = Rebuild(ROUTER, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, batch_size=3)
    result = await rebuild.run(asyncio.Event())
    assert result.switched and set(result.checksums) == set(ROUTER.tables)
    assert all(new == old for new, old in result.checksums.values()), result.checksums
    after = {t: await table_text(pg_url, "router_g2", t) for t in ROUTER.tables}
    assert after == before and len(before["router_rollouts"]) == 5


async def test_thompson_routes_most_work_to_the_type_its_rewards_favour(kafka_bootstrap, kafka_topics, pg_url):
    history: list[Event] = []
    for i in range(15):
        for agent_type, value in (("data_analyst", 1.0), ("qa_tester", 0.0), ("web_developer", 0.2)):
            rollout_id = f"ro-{agent_type}-{i}"
            history += [decided(rollout_id, agent_type), RewardAssigned(rollout_id=rollout_id, value=value)]
    async with running(worker_for(ROUTER, kafka_bootstrap, pg_url, kafka_topics)):
        token = await publish_with_token(kafka_bootstrap, kafka_topics, history)
        async with api_with(kafka_bootstrap, pg_url, kafka_topics) as api:
            assert len((await api.get("/v1/router", params={"after": token})).json()["arms"]) == 3
            answer = await api.post(
                "/v1/rollouts", json=[{"input": i, "metadata": {"task_kind": "python"}} for i in range(20)]
            )
            assert answer.status_code == 202, answer.text
    ids = {r["rollout_id"] for r in answer.json()["rollouts"]}
    records = await rollouts_topic(kafka_bootstrap, kafka_topics, len(history) // 2 + 40)
    chosen = Counter(e.agent_type for _, _, e in records if isinstance(e, RouterAssigned) and e.rollout_id in ids)
    assert sum(chosen.values()) == 20 and chosen["data_analyst"] >= 18, chosen


async def test_off_routes_by_free_slots_among_types_with_a_live_worker(kafka_bootstrap, kafka_topics, pg_url):
    workers: list[Event] = [
        WorkerRegistered(worker_id="w-da", capabilities=("python", "agent:data_analyst"), concurrency=1),
        WorkerRegistered(worker_id="w-qa", capabilities=("python", "test-design", "agent:qa_tester"), concurrency=3),
    ]
    async with (
        running(worker_for(WORKERS, kafka_bootstrap, pg_url, kafka_topics)),
        running(worker_for(ROUTER, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        token = await publish_with_token(kafka_bootstrap, kafka_topics, workers)
        async with api_with(kafka_bootstrap, pg_url, kafka_topics, router="off", router_cache_s=0) as api:
            assert (await api.get("/v1/workers", params={"after": token})).json()["total"] == 2
            answer = await api.post(
                "/v1/rollouts", json=[{"input": i, "metadata": {"task_kind": "python"}} for i in range(4)]
            )
            assert answer.status_code == 202, answer.text
            body = (await api.get("/v1/router", params={"after": answer.json()["position"]})).json()
            assert body["policy"] == "off"
            assert arms_of(body) == {("python", "data_analyst"): (1, 0, 0, 0), ("python", "qa_tester"): (3, 0, 0, 0)}
    records = await rollouts_topic(kafka_bootstrap, kafka_topics, 8)
    decisions = [e for _, _, e in records if isinstance(e, RouterAssigned)]
    assert len(decisions) == 4
    assert all(d.policy == "off" and d.candidates == ("data_analyst", "qa_tester") for d in decisions)
    # Each decision of the request takes a slot: 3 free on qa_tester and 1 on data_analyst give 3 and 1.
    assert Counter(d.agent_type for d in decisions) == {"qa_tester": 3, "data_analyst": 1}
    assert {tuple(d.samples.values()) for d in decisions} >= {(1.0, 3.0)}
