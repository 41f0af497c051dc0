"""The agent pools on a live service set: the API, the watchdog and the rollouts, resources, workers and archive
projections as processes (``tests/e2e/conftest.py``), the real LLM published as ``llm`` and ``proxy_llm``, and
``agl agents up`` started as a process with a pools file of the test's choosing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from producers.client import AsyncClient
from schemas import LLMResource, ProxyLLMResource
from tests.e2e.conftest import LiveServices, live_services

AgentsStack = Callable[[str], AbstractAsyncContextManager[LiveServices]]


async def wait_agents(
    live: LiveServices, count: int, *, health: str = "healthy", healthy_s: float = 15, timeout: float = 120
) -> list[dict[str, Any]]:
    """The agents once ``count`` of them are ``health`` (the runners have started and registered)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=live.api_url, timeout=30) as http:
        while True:
            answer = await http.get("/v1/agents", params={"health": health, "healthy_s": healthy_s})
            items: list[dict[str, Any]] = answer.json()["items"] if answer.status_code == 200 else []
            if len(items) >= count:
                return items
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(items)} of {count} agents {health}: {answer.text}\n{live.logs_tail()}")
            await asyncio.sleep(0.5)


async def enqueue(live: LiveServices, bodies: list[dict[str, Any]]) -> list[str]:
    async with httpx.AsyncClient(base_url=live.api_url, timeout=30) as http:
        answer = await http.post("/v1/rollouts", json=bodies)
        assert answer.status_code == 202, answer.text
        return [r["rollout_id"] for r in answer.json()["rollouts"]]


async def wait_ended(live: LiveServices, ids: list[str], timeout: float = 240) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=live.api_url, timeout=timeout + 30) as http:
        answer = await http.post("/v1/rollouts/wait", json={"rollout_ids": ids, "timeout_s": timeout})
        assert answer.status_code == 200, answer.text
        ended = {r["rollout_id"]: r for r in answer.json()["rollouts"]}
    assert set(ended) == set(ids), f"{len(ended)} of {len(ids)} rollouts ended in time\n{live.logs_tail()}"
    return ended


def pid_of_worker(worker_id: str) -> int:
    """The pid of the runner process registered as ``worker_id`` (found by its command line)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"runner" in argv and worker_id.encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no process runs worker {worker_id}")


@pytest.fixture
def agents_stack(
    kafka_bootstrap: str, kafka_topics: str, pg_url: str, *, llm_endpoint: str, llm_model: str, tmp_path: Path
) -> AgentsStack:
    """``async with agents_stack(pools_toml) as live``: the services, the LLM published, ``agl agents up`` running."""

    @asynccontextmanager
    async def start(pools: str) -> AsyncIterator[LiveServices]:
        config = tmp_path / "agents.toml"
        config.write_text(pools)
        async with live_services(kafka_bootstrap, kafka_topics, pg_url, tmp_path) as live:
            live.env["AGL_DATA_DIR"] = str(tmp_path / "data")  # the pools' logs go under it
            live.start("projection-workers", "projections", "run", "workers")
            live.start("projection-archive", "projections", "run", "archive")
            async with AsyncClient(live.api_url) as client:
                await client.publish_resources({
                    "llm": LLMResource(endpoint=llm_endpoint, model=llm_model),
                    "proxy_llm": ProxyLLMResource(endpoint=live.api_url, model=llm_model),
                })  # fmt: skip
            live.start(
                "agents", "agents", "up", "--config", str(config), "--api", live.api_url,
                "--heartbeat", "1", "--drain-grace", "5",
            )  # fmt: skip
            try:
                yield live
            except BaseException:
                agent_logs = sorted((tmp_path / "data" / "logs" / "agents").glob("*.log"))
                for log in agent_logs:
                    print(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
                raise

    return start


__all__ = ["enqueue", "pid_of_worker", "wait_agents", "wait_ended"]
