"""Eight runner processes share one queue: every rollout ends with exactly the attempts the rules allow, and no
rollout is ever run by two workers at once (each attempt starts after the previous one ended)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LiveServices
from tests.e2e.test_failures import enqueue

pytestmark = [pytest.mark.kafka, pytest.mark.pg, pytest.mark.slow]

ROLLOUTS = 300
RUNNERS = 8


async def all_rollouts(live: LiveServices) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=live.api_url, timeout=60) as client:
        while len(found) < ROLLOUTS:
            page = (await client.get("/v1/rollouts", params={"limit": 1000, "offset": len(found)})).json()
            if not page["items"]:
                break
            found += page["items"]
        ids = [r["rollout_id"] for r in found]
        if not ids:  # the read model has not caught up with the enqueues yet
            return []
        answer = await client.post("/v1/rollouts/wait", json={"rollout_ids": ids, "timeout_s": 0})
        assert answer.status_code == 200, answer.text
        ended: list[dict[str, Any]] = answer.json()["rollouts"]
        return ended


async def test_eight_runner_processes_run_each_rollout_by_the_rules(live: LiveServices):
    config = {"max_attempts": 2, "retry_condition": ["failed"]}
    for start in range(0, ROLLOUTS, 100):
        await enqueue(live, *({"input": {"n": n}, "config": config} for n in range(start, start + 100)))
    for r in range(RUNNERS):
        live.runner(f"runner-{r}", "tests.e2e.agents:flaky", "--slots", "4", "--heartbeat", "1")
    deadline = asyncio.get_running_loop().time() + 240
    while True:
        done = await all_rollouts(live)
        if len(done) == ROLLOUTS or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(1)
    assert len(done) == ROLLOUTS, f"{len(done)} of {ROLLOUTS} rollouts ended in time\n{live.logs_tail()}"
    assert {d["status"] for d in done} == {"succeeded"}
    attempts = Counter(d["attempt_count"] for d in done)
    assert attempts == {1: ROLLOUTS - ROLLOUTS // 3, 2: ROLLOUTS // 3}, "a retry exactly for each flaky first attempt"
    workers = Counter(a["worker_id"] for d in done for a in d["attempts"])
    assert len(workers) >= 2, f"the work was shared: {workers}"
    for d in done:
        ordered = sorted(d["attempts"], key=lambda a: a["sequence_id"])
        assert [a["sequence_id"] for a in ordered] == list(range(1, d["attempt_count"] + 1))
        for before, after in itertools.pairwise(ordered):
            # Never two attempts at once: the retry was claimed only after the failed attempt ended.
            assert datetime.fromisoformat(after["start_time"]) >= datetime.fromisoformat(before["end_time"])
