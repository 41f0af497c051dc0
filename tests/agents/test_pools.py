"""The six agent types on the real stack: `agl agents up` starts them, they register healthy with their type and
version, a mixed batch is routed by capability and rewarded, a task nobody can take says why it waits, and
`agl agents status` shows them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter

import httpx
import pytest

from agl.agents import AGENT_TYPES
from agl.agents.kinds import AGENT_CAPABILITIES
from agl.agents.tasks import load_tasks, mixed_batch, rollout_body
from producers.client import AsyncClient
from schemas import LLMResource, ProxyLLMResource
from tests.agents.conftest import AgentsStack, enqueue, wait_agents, wait_ended
from tests.e2e.conftest import REPO

pytestmark = [pytest.mark.kafka, pytest.mark.pg, pytest.mark.slow]

SIX_POOLS = "\n".join(f"[pools.{t}]\ninstances = 1\nslots = 2\n" for t in AGENT_TYPES)


async def test_six_types_come_up_healthy_and_a_mixed_batch_is_routed_and_rewarded(agents_stack: AgentsStack):
    async with agents_stack(SIX_POOLS) as live:
        agents = await wait_agents(live, len(AGENT_TYPES))
        assert sorted(a["agent_type"] for a in agents) == sorted(AGENT_TYPES)
        assert {a["version"] for a in agents} == {"1"}
        assert all(a["slots"] == 2 and a["free_slots"] == 2 for a in agents), agents
        async with httpx.AsyncClient(base_url=live.api_url, timeout=30) as http:
            sql = (await http.get("/v1/agents", params={"capability": "sql"})).json()["items"]
            assert [a["agent_type"] for a in sql] == ["data_analyst"]
            one = (await http.get(f"/v1/agents/{agents[0]['agent_id']}")).json()
            assert one["health"] == "healthy"

        # A task no worker can take waits, and says why.
        (lonely,) = await enqueue(live, [{"input": {}, "required_capabilities": ["quantum-chemistry"]}])
        async with httpx.AsyncClient(base_url=live.api_url, timeout=30) as http:
            # Until the read model has it: 100 reads in a row, without a pause, were over before it did on a loaded
            # Tansu (CI).
            for _ in range(300):
                seen = await http.get(f"/v1/rollouts/{lonely}")
                if seen.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert seen.status_code == 200, seen.text
            assert seen.json()["status"] == "queuing"
            assert seen.json()["waiting"] == "no healthy worker has capability quantum-chemistry"

        tasks = mixed_batch(12)
        ids = await enqueue(live, [rollout_body(t, config={"max_attempts": 2}) for t in tasks])
        ended = await wait_ended(live, ids)
        by_kind: Counter[str] = Counter()
        async with httpx.AsyncClient(base_url=live.api_url, timeout=30) as http:
            for rollout_id, task in zip(ids, tasks, strict=True):
                done = ended[rollout_id]
                assert done["status"] == "succeeded", done
                succeeded = [a for a in done["attempts"] if a["status"] == "succeeded"]
                if len(succeeded) != 1:
                    decisions = [
                        e["event"]
                        for e in await _events(http, rollout_id)
                        if e["type"].startswith(("rollout.", "attempt."))
                    ]
                    raise AssertionError((done["attempts"], done["latest_attempt"], done["attempt_count"], decisions))
                (attempt,) = succeeded
                agent_type = attempt["worker_id"].rsplit("-", 2)[0]
                # Only a type declaring the kind's capabilities claimed it.
                assert set(rollout_body(task)["required_capabilities"]) <= set(AGENT_CAPABILITIES[agent_type])
                by_kind[task["kind"]] += 1
                history = await _events(http, rollout_id)
                rewards = [e["event"]["value"] for e in history if e["type"] == "reward.assigned"]
                assert len(rewards) == 1 and 0.0 <= rewards[0] <= 1.0, history
                # The LLM was called through the API's proxy, which recorded the call.
                spans = [e["event"]["name"] for e in history if e["type"] == "span.recorded"]
                assert "openai.chat.completion" in spans, spans
        assert set(by_kind) == {"web", "analysis", "security", "ops", "testing", "general"}

        # No canned answer: with the LLM behind the proxy unreachable, the attempt fails.
        async with AsyncClient(live.api_url) as client:
            dead = await client.publish_resources({
                "llm": LLMResource(endpoint="http://127.0.0.1:9/v1", model="gone"),
                "proxy_llm": ProxyLLMResource(endpoint=live.api_url, model="gone"),
            })  # fmt: skip
        body = rollout_body(load_tasks("general")[0], resources_id=dead.resources_id, config={"max_attempts": 1})
        (unanswered,) = await enqueue(live, [body])
        failed = (await wait_ended(live, [unanswered]))[unanswered]
        assert failed["status"] == "failed", failed
        assert failed["attempts"][0]["error"]["type"] == "LLMUnavailable", failed["attempts"][0]["error"]

        status = subprocess.run(  # noqa: ASYNC221 - a short CLI run
            [sys.executable, "-m", "agl", "agents", "status", "--api", live.api_url],
            env=live.env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        for agent_type in AGENT_TYPES:
            assert any(agent_type in line and "healthy" in line for line in status.stdout.splitlines()), status.stdout


async def _events(http: httpx.AsyncClient, rollout_id: str) -> list[dict]:  # type: ignore[type-arg]
    """The rollout's archived events once its reward and its LLM span are there."""
    import asyncio

    events: list[dict] = []  # type: ignore[type-arg]
    for _ in range(300):
        answer = await http.get(f"/v1/rollouts/{rollout_id}/events")
        if answer.status_code == 200:
            events = answer.json()["events"]
            kinds = {e["type"] for e in events}
            if {"reward.assigned", "span.recorded"} <= kinds:
                return events
        await asyncio.sleep(0.1)
    return events
