"""Processes fail and every rollout still ends as the rules allow: a runner killed with -9 mid-attempt (another
runner retries the rollout), the watchdog killed with -9 (its replacement decides), the API killed with -9 while
runners work (they back off and lose no report)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LiveServices, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.pg, pytest.mark.slow]


async def enqueue(live: LiveServices, *items: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=live.api_url, timeout=30) as client:
        answer = await client.post("/v1/rollouts", json=list(items))
        assert answer.status_code == 202, answer.text


async def rollout(live: LiveServices, rollout_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=live.api_url, timeout=30) as client:
        answer = await client.get(f"/v1/rollouts/{rollout_id}")
        return answer.json() if answer.status_code == 200 else {"status": None}


async def until(
    live: LiveServices, rollout_ids: list[str], statuses: set[str], timeout: float = 90
) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            found = [await rollout(live, r) for r in rollout_ids]
        except httpx.TransportError:
            found = []
        if found and all(f["status"] in statuses for f in found):
            return found
        if asyncio.get_running_loop().time() > deadline:
            print(live.logs_tail())
            raise AssertionError(f"not all of {rollout_ids} reached {statuses}: {[f.get('status') for f in found]}")
        await asyncio.sleep(0.2)


async def test_a_runner_killed_mid_attempt_is_replaced_and_the_rollout_succeeds(live: LiveServices):
    config = {"unresponsive_seconds": 2, "max_attempts": 2, "retry_condition": ["unresponsive"]}
    await enqueue(live, {"rollout_id": "ro-k1", "input": 1, "config": config})
    live.runner("runner-a", "tests.e2e.agents:stuck_first_time", "--heartbeat", "0.5")
    await until(live, ["ro-k1"], {"running"})
    live.kill9("runner-a")
    # The watchdog dies too, and its replacement takes the decision.
    live.kill9("watchdog")
    live.start("watchdog-2", "watchdog", "--interval", "0.2")
    live.runner("runner-b", "tests.e2e.agents:stuck_first_time", "--heartbeat", "0.5")
    (done,) = await until(live, ["ro-k1"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    attempts = [(a["sequence_id"], a["worker_id"], a["status"]) for a in done["attempts"]]
    assert attempts == [(1, "runner-a", "unresponsive"), (2, "runner-b", "succeeded")]


async def test_runners_ride_out_an_api_killed_with_minus_9(live: LiveServices):
    ids = [f"ro-api-{i}" for i in range(20)]
    await enqueue(live, *({"rollout_id": r, "input": i} for i, r in enumerate(ids)))
    live.runner("runner-a", "tests.e2e.agents:quick", "--slots", "4", "--heartbeat", "0.5")
    await until(live, ids[:3], {"succeeded"})
    live.kill9("api")
    await asyncio.sleep(2)
    live.start("api-2", "api")
    await wait_ready(live.api_url)
    done = await until(live, ids, {"succeeded", "failed", "cancelled"})
    assert [d["status"] for d in done] == ["succeeded"] * len(ids)
    # Nothing ran twice: one attempt each, by the one runner.
    assert {(d["attempt_count"], d["attempts"][0]["worker_id"]) for d in done} == {(1, "runner-a")}
