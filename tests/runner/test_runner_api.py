"""The runner against the real API (in-process ASGI, real Kafka and PostgreSQL): runs, retries, cancels, drains."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from agl.runner import Runner, RunnerOptions
from schemas import RolloutConfig
from tests.runner import agents
from tests.runner.conftest import rollout_items, until

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


async def terminal(client, ids, timeout_s=60.0) -> dict[str, dict[str, Any]]:
    """The rollouts once all are terminal, by id (fails the test after ``timeout_s``)."""
    answers = await client.wait_rollouts(ids, timeout_s)
    found = {a.rollout_id: a.model_dump() for a in answers}
    assert sorted(found) == sorted(ids), f"not terminal in {timeout_s} s: {sorted(set(ids) - set(found))}"
    return found


async def test_a_runner_runs_twenty_rollouts_of_a_noop_agent_to_succeeded(client):
    ids = [r["rollout_id"] for r in rollout_items("ro-noop", 20)]
    await client.enqueue_rollouts(rollout_items("ro-noop", 20))
    runner = Runner(agents.noop, client, RunnerOptions(slots=4, max_rollouts=20, worker_id="w-noop"))
    ends = await asyncio.wait_for(runner.run(), 120)
    assert ends == Counter({"succeeded": 20})
    assert sorted(r.rollout_id for r in runner.records) == ids  # each once
    rollouts = await terminal(client, ids)
    assert {r["status"] for r in rollouts.values()} == {"succeeded"}
    assert {len(r["attempts"]) for r in rollouts.values()} == {1}
    assert {r["attempts"][0]["worker_id"] for r in rollouts.values()} == {"w-noop"}


async def test_an_agent_that_raises_fails_its_attempt_and_is_retried_per_config(client):
    config = RolloutConfig(max_attempts=2, retry_condition=("failed",))
    await client.enqueue_rollout({"x": 1}, rollout_id="ro-fails", config=config)
    await client.enqueue_rollout({"x": 2}, rollout_id="ro-once", config=RolloutConfig())
    runner = Runner(agents.always_fails, client, RunnerOptions(slots=2, max_rollouts=3))
    assert await asyncio.wait_for(runner.run(), 120) == Counter({"failed": 3})
    rollouts = await terminal(client, ["ro-fails", "ro-once"])
    retried, once = rollouts["ro-fails"], rollouts["ro-once"]
    assert retried["status"] == "failed" and [a["status"] for a in retried["attempts"]] == ["failed", "failed"]
    assert [a["sequence_id"] for a in retried["attempts"]] == [1, 2]
    error = retried["attempts"][0]["error"]
    assert error["type"] == "ValueError" and error["message"] == "boom on {'x': 1}"
    assert 'raise ValueError(f"boom on {task}")' in error["traceback"]
    assert once["status"] == "failed" and len(once["attempts"]) == 1  # max_attempts 1: no retry


async def test_a_retried_rollout_succeeds_on_its_second_attempt_with_its_rewards(client):
    config = RolloutConfig(max_attempts=2, retry_condition=("failed",))
    await client.enqueue_rollout({"x": 3}, rollout_id="ro-second", config=config)
    runner = Runner(agents.fails_first_attempt, client, RunnerOptions(max_rollouts=2))
    assert await asyncio.wait_for(runner.run(), 120) == Counter({"failed": 1, "succeeded": 1})
    rollout = (await terminal(client, ["ro-second"]))["ro-second"]
    assert rollout["status"] == "succeeded"
    assert [a["status"] for a in rollout["attempts"]] == ["failed", "succeeded"]
    (second,) = [r for r in runner.records if r.end == "succeeded"]
    assert second.rewards == (0.5, 1.0)  # the emitted one, then the returned one


async def test_a_cancelled_rollout_stops_its_running_attempt(app, client):
    await client.enqueue_rollout({"x": 4}, rollout_id="ro-cancel")
    agent = agents.Waiter()
    options = RunnerOptions(worker_id="w-cancel", slots=3, heartbeat_s=0.2, poll_wait_ms=300)
    runner = Runner(agent, client, options)
    run = asyncio.create_task(runner.run())
    await asyncio.wait_for(agent.started.wait(), 30)
    # The worker's heartbeats say what it runs (the workers read model shows them).
    (attempt_id,) = runner._active
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:

        async def reported() -> dict[str, Any] | None:
            worker = (await http.get("/v1/workers/w-cancel")).json()
            return worker if worker.get("attempts") == [attempt_id] else None

        worker = await until(reported)
    assert (worker["slots"], worker["busy_slots"], worker["status"]) == (3, 1, "busy")
    await client.cancel_rollout("ro-cancel", reason="test")
    await asyncio.wait_for(agent.cancelled.wait(), 30)
    rollout = (await terminal(client, ["ro-cancel"]))["ro-cancel"]
    assert rollout["status"] == "cancelled"
    runner.stop()
    assert await asyncio.wait_for(run, 30) == Counter({"cancelled": 1})


async def test_stop_drains_running_attempts_then_deregisters(client):
    await client.enqueue_rollout({"sleep_s": 1.5}, rollout_id="ro-drain")
    runner = Runner(agents.slow, client, RunnerOptions(worker_id="w-drain", heartbeat_s=0.3, poll_wait_ms=200))
    run = asyncio.create_task(runner.run())

    async def claimed() -> bool:
        return bool(runner.records) or "ro-drain" in {a.claim.rollout_id for a in runner._active.values()}

    await until(claimed, every_s=0.02)
    runner.stop()
    await client.enqueue_rollout({"sleep_s": 0}, rollout_id="ro-after-drain")
    assert await asyncio.wait_for(run, 30) == Counter({"succeeded": 1})
    assert (await terminal(client, ["ro-drain"]))["ro-drain"]["status"] == "succeeded"
    # Claimed nothing once stopped: the later rollout is still there for another worker to claim.
    assert [c.rollout_id for c in await client.dequeue("w-other", limit=10)] == ["ro-after-drain"]


async def test_an_attempt_past_the_drain_grace_is_reported_failed(client):
    await client.enqueue_rollout({"x": 5}, rollout_id="ro-grace")
    agent = agents.Waiter()
    runner = Runner(agent, client, RunnerOptions(drain_grace_s=0.5, heartbeat_s=0.3))
    run = asyncio.create_task(runner.run())
    await asyncio.wait_for(agent.started.wait(), 30)
    runner.stop()
    assert await asyncio.wait_for(run, 30) == Counter({"shutdown": 1})
    assert agent.cancelled.is_set()
    rollout = (await terminal(client, ["ro-grace"]))["ro-grace"]
    assert rollout["status"] == "failed"
    assert rollout["attempts"][0]["error"]["type"] == "RunnerShutdown"


async def test_mode_picks_the_method_hooks_run_around_it_and_no_resources_is_an_empty_dict(client):
    await client.enqueue_rollout({}, rollout_id="ro-train", mode="train")
    await client.enqueue_rollout({}, rollout_id="ro-val", mode="val")
    agent = agents.Hooked()
    runner = Runner(agent, client, RunnerOptions(worker_id="w-hooks", max_rollouts=2))
    assert await asyncio.wait_for(runner.run(), 60) == Counter({"succeeded": 2})
    assert agent.calls == [
        ("start", "ro-train", "w-hooks"), ("train", "ro-train", {}), ("end", "ro-train", 0.5),
        ("start", "ro-val", "w-hooks"), ("val", "ro-val", {}), ("end", "ro-val", 0.25),
    ]  # fmt: skip
    assert {r.rollout_id: r.rewards for r in runner.records} == {"ro-train": (0.5,), "ro-val": (0.25,)}
