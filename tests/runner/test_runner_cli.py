"""``agl runner`` as a process against the API over real HTTP: it runs claims, and SIGTERM drains it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

import agl
from agl.stack._process import free_port
from tests.fixtures.services import REPO_ROOT
from tests.runner.conftest import until

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """``app`` (its lifespan already running) on a real port, for a runner in another process."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def runner_process(url: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agl", "runner", "--api", url, *args,
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_sigterm_drains_the_running_attempt_claims_nothing_more_and_deregisters(app, client):
    await client.enqueue_rollout({"sleep_s": 2.0}, rollout_id="ro-term")
    async with served(app) as url, httpx.AsyncClient(base_url=url) as http:
        process = await runner_process(
            url, "--agent", "tests.runner.agents:slow", "--worker-id", "w-term", "--heartbeat", "0.3"
        )

        async def is_running() -> bool:
            found = await client.get_rollout("ro-term")
            return found is not None and found.status == "running"

        await until(is_running)
        process.send_signal(signal.SIGTERM)
        await client.enqueue_rollout({"sleep_s": 0}, rollout_id="ro-after-term")
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
        assert "w-term: 1 succeeded" in stdout.decode()
        assert (await client.wait_rollouts(["ro-term"], 30))[0].status == "succeeded"
        assert [c.rollout_id for c in await client.dequeue("w-other", limit=10)] == ["ro-after-term"]

        async def deregistered() -> dict[str, Any] | None:
            worker = (await http.get("/v1/workers/w-term")).json()
            return worker if worker.get("deregistered_at") else None

        worker = await until(deregistered)
        assert worker["deregister_reason"] == "drained"


async def test_a_bounded_runner_runs_its_rollouts_and_exits(app, client):
    await client.enqueue_rollouts([{"rollout_id": f"ro-cli-{i}", "input": {"sleep_s": 0}} for i in range(3)])
    async with served(app) as url:
        process = await runner_process(
            url, "--agent", "tests.runner.agents:slow", "--slots", "2", "--max-rollouts", "3"
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    assert ": 3 succeeded" in stdout.decode()
    answers = await client.wait_rollouts([f"ro-cli-{i}" for i in range(3)], 30)
    assert sorted(a.status for a in answers) == ["succeeded"] * 3


async def test_an_idle_runner_exits_and_a_bad_agent_is_a_usage_error(app, client):
    async with served(app) as url:
        process = await runner_process(url, "--agent", "tests.runner.agents:noop", "--idle-exit", "0.5")
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
        assert "no attempts" in stdout.decode()
        process = await runner_process(url, "--agent", "tests.runner.agents:nothing_here")
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2 and "nothing_here" in stderr.decode()


def score(task):
    return float(task["n"])


async def test_dev_runs_an_agent_over_tasks_and_returns_the_rollouts(app, client):
    async with served(app) as url:
        # Blocking, as from a script: on a thread here, since this test's loop serves the API.
        rollouts = await asyncio.to_thread(agl.dev, score, [{"n": 1}, {"n": 2}, {"n": 3}], api=url, timeout_s=60)
    assert [(r.input["n"], r.status, r.reward, r.attempts) for r in rollouts] == [
        (1, "succeeded", 1.0, 1), (2, "succeeded", 2.0, 1), (3, "succeeded", 3.0, 1),
    ]  # fmt: skip
    assert len({r.rollout_id for r in rollouts}) == 3
