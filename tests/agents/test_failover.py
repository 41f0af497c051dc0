"""Several instances of one agent type share its work by free slots, and an instance killed with -9 in the middle
of a task has that task completed by another instance, while the registry reports the dead one unreachable."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections import Counter
from datetime import datetime
from typing import Any

import httpx
import pytest

from agl.agents.tasks import load_tasks, rollout_body
from agl.stack.llm import EmbeddedLLM
from tests.agents.conftest import AgentsStack, enqueue, pid_of_worker, wait_agents, wait_ended

pytestmark = [pytest.mark.kafka, pytest.mark.pg, pytest.mark.slow]

SLOTS = 2
POOL = f"[pools.data_analyst]\ninstances = 3\nslots = {SLOTS}\n"


def _most_at_once(attempts: list[dict[str, Any]]) -> int:
    """The most attempts of one worker that overlapped in time."""
    edges = sorted(
        (datetime.fromisoformat(a[k]), d) for a in attempts for k, d in (("start_time", 1), ("end_time", -1))
    )
    return max(itertools.accumulate(d for _, d in edges))


async def test_instances_share_work_and_a_killed_instance_task_completes_elsewhere(
    agents_stack: AgentsStack, embedded_llm: EmbeddedLLM | None
):
    if embedded_llm is None or embedded_llm.process is None or embedded_llm.process.pid is None:
        pytest.skip("holding a task mid-flight pauses the embedded LLM; AGL_LLM_ENDPOINT names another one")
    llm_pid = embedded_llm.process.pid
    async with agents_stack(POOL) as live:
        agents = await wait_agents(live, 3)
        # Load spread: three instances of one type take a batch between them, none above its slots.
        tasks = load_tasks("analysis") * 3
        ids = await enqueue(live, [rollout_body(t) for t in tasks])
        ended = await wait_ended(live, ids)
        assert {r["status"] for r in ended.values()} == {"succeeded"}
        ran: dict[str, list[dict[str, Any]]] = {}
        for r in ended.values():
            for a in r["attempts"]:
                ran.setdefault(a["worker_id"], []).append(a)
        assert set(ran) == {a["agent_id"] for a in agents}, f"every instance got work: {Counter(ran)}"
        assert all(_most_at_once(a) <= SLOTS for a in ran.values())

        # Failover: pause the LLM so the next task is surely mid-flight, kill its instance, resume the LLM.
        os.kill(llm_pid, signal.SIGSTOP)
        try:
            config = {"unresponsive_seconds": 3, "max_attempts": 3, "retry_condition": ["unresponsive", "failed"]}
            (rollout_id,) = await enqueue(live, [rollout_body(load_tasks("analysis")[0], config=config)])
            victim = await _worker_running(live, rollout_id)
            os.kill(pid_of_worker(victim), signal.SIGKILL)
        finally:
            os.kill(llm_pid, signal.SIGCONT)
        done = (await wait_ended(live, [rollout_id]))[rollout_id]
        assert done["status"] == "succeeded", done
        attempts = sorted(done["attempts"], key=lambda a: a["sequence_id"])
        assert (attempts[0]["worker_id"], attempts[0]["status"]) == (victim, "unresponsive"), attempts
        assert attempts[-1]["status"] == "succeeded" and attempts[-1]["worker_id"] != victim

        # The registry sees the dead instance go silent (thresholds shortened by the query), and the supervisor
        # has restarted the instance under a new worker id.
        async with httpx.AsyncClient(base_url=live.api_url, timeout=30) as http:
            seen = await http.get(f"/v1/agents/{victim}", params={"healthy_s": 1, "unreachable_s": 2})
            assert seen.json()["health"] == "unreachable", seen.text
            history = await http.get(f"/v1/agents/{victim}/history", params={"healthy_s": 1, "unreachable_s": 2})
            healths = [c["health"] for c in history.json()["changes"]]
            assert healths[0] == "healthy" and healths[-2:] == ["degraded", "unreachable"], history.text
        for _ in range(120):
            healthy = await wait_agents(live, 3, healthy_s=2)
            if victim not in {a["agent_id"] for a in healthy}:
                break
            await asyncio.sleep(0.5)
        restarted = {a["agent_id"] for a in healthy} - {a["agent_id"] for a in agents}
        assert [r.rsplit("-", 1)[0] for r in restarted] == [victim.rsplit("-", 1)[0]], (victim, healthy)


async def _worker_running(live: Any, rollout_id: str, timeout: float = 60) -> str:
    """The worker running the rollout's attempt, once its own heartbeat reports it (the LLM is paused: it stays)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=live.api_url, timeout=30) as http:
        while asyncio.get_running_loop().time() < deadline:
            answer = await http.get(f"/v1/rollouts/{rollout_id}")
            latest = answer.json().get("latest_attempt") if answer.status_code == 200 else None
            if latest and latest["worker_id"]:
                agent = (await http.get(f"/v1/agents/{latest['worker_id']}")).json()
                if latest["attempt_id"] in agent["attempts"]:
                    return str(latest["worker_id"])
            await asyncio.sleep(0.2)
    raise AssertionError(f"no agent reported {rollout_id} running")
