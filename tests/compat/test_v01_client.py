"""Contract: Agent Lightning's v0.1 task client (as shipped in agentlightning 0.3, unmodified) against our root
routes: ``GET /task``, ``GET /resources/{id}`` and ``/latest``, ``POST /rollout`` with the SDK's span JSON."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compat.agl_venv import PEER_ENV
from tests.e2e.conftest import LiveServices

pytestmark = [pytest.mark.agl_client, pytest.mark.kafka, pytest.mark.pg, pytest.mark.slow, pytest.mark.timeout(1800)]
SCRIPT = Path(__file__).with_name("agl_peer.py")


async def _until(http: httpx.AsyncClient, path: str, ok: Callable[[Any], bool], timeout: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = await http.get(path)
        body: dict[str, Any] = answer.json()
        if answer.status_code == 200 and ok(body):
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.3)


async def test_a_v01_client_takes_tasks_and_reports_results(agl_live: LiveServices, agl_python: Path) -> None:
    agl_live.start("projection-archive", "projections", "run", "archive")
    async with httpx.AsyncClient(base_url=agl_live.api_url, timeout=30) as http:
        resources = {"main_llm": {"resource_type": "llm", "endpoint": "http://llm/v1", "model": "m"}}
        published = (await http.post("/v1/resources", json={"resources": resources})).json()
        second = (
            await http.post("/v1/resources", json={"resources_id": published["resources_id"], "resources": resources})
        ).json()
        ids = ["ro-v01-a", "ro-v01-b"]
        pinned = {"resources_id": published["resources_id"]}
        await http.post(
            "/v1/rollouts", json=[{"rollout_id": i, "input": {"n": k}, **pinned} for k, i in enumerate(ids)]
        )
        await _until(http, "/v1/resources/latest", lambda b: b.get("resources_version") == 2)

        done = await asyncio.to_thread(
            subprocess.run,
            [str(agl_python), str(SCRIPT), "v01", "2", agl_live.api_url],
            env={**os.environ, **PEER_ENV},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])

        # Ids the v0.1 client caches for ever name one version each.
        immutable = f"{published['resources_id']}@v2"
        assert second["resources_version"] == 2
        assert seen["latest"] == [immutable, 2]
        assert [t["rollout_id"] for t in seen["tasks"]] == ids
        for task in seen["tasks"]:
            assert (task["resources_id"], task["resources"]) == (immutable, ["main_llm"])
            assert task["answer"] == {
                "status": "ok",
                "message": f"Rollout {task['rollout_id']} received and stored.",
                "data": None,
            }

        for task in seen["tasks"]:
            rollout = await _until(http, f"/v1/rollouts/{task['rollout_id']}", lambda b: b["status"] == "succeeded")
            assert rollout["attempt_count"] == 1
            spans = (await http.post("/v1/agl/spans/search", json={"rollout_id": task["rollout_id"]})).json()
            assert [s["span_id"] for s in spans["items"]] == [task["span_id"][2:]]
            history = await _until(
                http,
                f"/v1/rollouts/{task['rollout_id']}/events",
                lambda b: any(e["type"] == "reward.assigned" for e in b["events"]),
            )
            (reward,) = [e["event"] for e in history["events"] if e["type"] == "reward.assigned"]
            assert (reward["value"], reward["attempt_id"]) == (0.5, rollout["latest_attempt_id"])
        # An unknown rollout and a missing resources id answer as the v0.1 server did.
        assert (await http.post("/rollout", json={"rollout_id": "ro-never"})).status_code == 404
        missing = await http.get("/resources/rs-never")
        assert (missing.status_code, missing.json()) == (404, {"detail": "Resource ID 'rs-never' not found."})
        assert (await http.get("/task")).json() == {"is_available": False, "task": None}
