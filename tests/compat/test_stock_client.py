"""Contract: unmodified Agent Lightning 0.3 against our server. A stock ``LitAgentRunner`` (found through
``AGL_CURRENT_ROLE=runner AGL_SERVER_HOST/PORT``) runs rollouts that a stock ``LightningStoreClient`` enqueued and
waits for; its agent asks the real LLM. Its spans (OTLP and ``/v1/agl/spans``) become our spans and triplets."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.compat.agl_venv import PEER_ENV
from tests.e2e.conftest import LiveServices

pytestmark = [pytest.mark.agl_client, pytest.mark.kafka, pytest.mark.pg, pytest.mark.slow, pytest.mark.timeout(1800)]
SCRIPT = Path(__file__).with_name("agl_peer.py")
ROLLOUTS = 3


def _peer(agl_python: Path, mode: str, *args: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [str(agl_python), str(SCRIPT), mode, *args],
            env={**os.environ, **PEER_ENV, **env},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def _result(proc: subprocess.Popen[str], log: Path, timeout: float) -> dict[str, object]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"{proc.args!r} did not finish; its log:\n{log.read_text()[-4000:]}") from None
    assert proc.returncode == 0, f"exit {proc.returncode}; log:\n{log.read_text()[-4000:]}"
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


async def _triplets(api_url: str, rollout_id: str, timeout: float = 60) -> list[dict[str, object]]:
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        while True:
            answer = await http.get(f"/v1/rollouts/{rollout_id}/triplets")
            items: list[dict[str, object]] = answer.json()["items"] if answer.status_code == 200 else []
            if items or asyncio.get_running_loop().time() > deadline:
                return items
            await asyncio.sleep(0.5)


async def test_a_stock_runner_and_algorithm_train_through_our_server(
    agl_live: LiveServices, agl_python: Path, llm_endpoint: str, llm_model: str, tmp_path: Path
) -> None:
    agl_live.start("projection-triplets", "projections", "run", "triplets")
    url = urlsplit(agl_live.api_url)
    runner_env = {"AGL_CURRENT_ROLE": "runner", "AGL_SERVER_HOST": str(url.hostname), "AGL_SERVER_PORT": str(url.port)}
    # agentlightning 0.3.0 points its OTLP exporter at the store by setting a field that opentelemetry-exporter-otlp
    # 1.45 no longer reads (it sends to localhost:4318 instead, whichever server it talks to): the exporter's own
    # setting names our receiver (docs/agent-lightning-migration.md).
    runner_env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{agl_live.api_url}/v1/traces"
    runner = _peer(agl_python, "runner", str(ROLLOUTS), env=runner_env, log=tmp_path / "runner.log")
    algorithm = _peer(
        agl_python,
        "algorithm",
        str(ROLLOUTS),
        agl_live.api_url,
        llm_endpoint,
        llm_model,
        env={},
        log=tmp_path / "algorithm.log",
    )
    seen = await asyncio.to_thread(_result, algorithm, tmp_path / "algorithm.log", 600)
    await asyncio.to_thread(_result, runner, tmp_path / "runner.log", 120)

    enqueued = seen["enqueued"]
    assert isinstance(enqueued, list)
    ids = [r["rollout_id"] for r in enqueued]
    assert all(r["status"] == "queuing" and r["resources_id"] == seen["resources_id"] for r in enqueued)
    assert seen["latest_resources_id"] == seen["resources_id"]
    assert seen["finished"] == dict.fromkeys(ids, "succeeded")
    assert seen["succeeded_total"] == ROLLOUTS
    assert seen["get_rollout"] == "succeeded"
    assert seen["missing_rollout"] is None, "200 null for a rollout that does not exist"
    assert seen["attempts"] == {i: ["succeeded", "Worker-0"] for i in ids}
    # The OTLP span of the LLM call and the reward span the runner built from the agent's float.
    assert seen["spans"] == {i: ["agentlightning.annotation", "openai.chat.completion"] for i in ids}

    async with httpx.AsyncClient(base_url=agl_live.api_url, timeout=30) as http:
        for rollout_id in ids:
            ours = (await http.get(f"/v1/rollouts/{rollout_id}")).json()
            assert (ours["status"], ours["attempt_count"]) == ("succeeded", 1)
    for rollout_id in ids:
        (triplet,) = await _triplets(agl_live.api_url, rollout_id)
        assert triplet["reward"] in (0.0, 1.0)
