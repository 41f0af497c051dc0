"""Traces to triplets, end to end: an `agl runner` process executes the example agent, whose LLM calls go through
the API's LLM proxy to the real local model; the attempts end with triplets carrying token ids and the rewards,
visible through the API and exported to Parquet by `agl triplets export`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from producers.client import AsyncClient
from schemas import LLMResource, ProxyLLMResource
from tests.e2e.conftest import REPO, live_services

pytestmark = [pytest.mark.kafka, pytest.mark.pg, pytest.mark.slow]


async def _triplets(http: httpx.AsyncClient, rollout_id: str, *, want_reward: bool) -> list[dict[str, Any]]:
    """The rollout's triplets once the projection has its spans and (when wanted) the reward bound."""
    rows: list[dict[str, Any]] = []
    for _ in range(600):
        answer = await http.get(f"/v1/rollouts/{rollout_id}/triplets")
        answer.raise_for_status()
        rows = answer.json()["items"]
        if rows and (not want_reward or all(r["reward"] is not None for r in rows)):
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"no (rewarded) triplets for {rollout_id}: {rows}")


async def _llm_spans(http: httpx.AsyncClient, rollout_id: str) -> list[dict[str, Any]]:
    """The rollout's LLM call spans once the spans projection has them (it runs apart from the triplets one, so
    it may not have caught up when the triplet is there)."""
    spans: list[dict[str, Any]] = []
    for _ in range(600):
        answer = await http.get(f"/v1/rollouts/{rollout_id}/spans", params={"name": "openai.chat.completion"})
        answer.raise_for_status()
        spans = answer.json()["items"]
        if spans:
            return spans
        await asyncio.sleep(0.1)
    raise AssertionError(f"no LLM call spans for {rollout_id}")


async def _rewards(http: httpx.AsyncClient, rollout_id: str) -> list[float]:
    """The values of the rollout's ``reward.assigned`` events, once the archive has them."""
    for _ in range(300):
        answer = await http.get(f"/v1/rollouts/{rollout_id}/events", params={"type": "reward.assigned"})
        if answer.status_code == 200 and answer.json()["events"]:
            return [e["event"]["value"] for e in answer.json()["events"]]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no reward archived for {rollout_id}")


async def test_a_runner_agent_through_the_proxy_ends_with_triplets_and_a_parquet_export(
    kafka_bootstrap, kafka_topics, pg_url, *, e2e_logs, llm_endpoint, llm_model, tmp_path: Path
):
    async with live_services(kafka_bootstrap, kafka_topics, pg_url, e2e_logs) as live:
        live.start("projection-spans", "projections", "run", "spans")
        live.start("projection-triplets", "projections", "run", "triplets")
        live.start("projection-archive", "projections", "run", "archive")  # the rollout's history
        async with AsyncClient(live.api_url) as client, httpx.AsyncClient(base_url=live.api_url, timeout=30) as http:
            published = await client.publish_resources({
                "llm": LLMResource(endpoint=llm_endpoint, model=llm_model),
                "proxy_llm": ProxyLLMResource(endpoint=live.api_url, model=llm_model),
            })  # fmt: skip
            tasks = [{"question": "What is 2 + 3?", "answer": 5}, {"question": "What is 7 - 4?", "answer": 3}]
            enqueued = await http.post(
                "/v1/rollouts",
                json=[{"input": t, "mode": "train", "resources_id": published.resources_id} for t in tasks],
            )
            enqueued.raise_for_status()
            ids = [r["rollout_id"] for r in enqueued.json()["rollouts"]]
            live.runner("runner-1", "examples.math_agent:math_agent", "--slots", "2")
            waited = await http.post("/v1/rollouts/wait", json={"rollout_ids": ids, "timeout_s": 240}, timeout=300)
            finished = {r["rollout_id"]: r for r in waited.json()["rollouts"]}
            assert {finished[i]["status"] for i in ids} == {"succeeded"}, finished

            for rollout_id in ids:
                (triplet,) = await _triplets(http, rollout_id, want_reward=True)
                # The proxy's span carries the token ids the backend gave (llama.cpp: its logprob ids, /tokenize).
                spans = await _llm_spans(http, rollout_id)
                assert any(s["attributes"].get("prompt_token_ids") for s in spans), spans
                assert triplet["prompt_token_ids"] and triplet["response_token_ids"]
                # The client's span leaves the logprobs to the proxy's; the triplet has them (one per token).
                assert len(triplet["logprobs"]) == len(triplet["response_token_ids"])
                assert triplet["mode"] == "train" and triplet["resources_id"] == published.resources_id
                assert triplet["reward"] in (0.0, 1.0) and triplet["reward_source"] == "link"
                assert await _rewards(http, rollout_id) == [triplet["reward"]]  # the rollout's reward is the triplet's

    out = tmp_path / "triplets.parquet"
    env = {**live.env, "AGL_DATABASE_URL": pg_url}
    exported = subprocess.run(  # noqa: ASYNC221 - a short CLI run, after the services are down
        [sys.executable, "-m", "agl", "triplets", "export", "--format", "parquet", "--output", str(out), "-q"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    table = pq.read_table(out).to_pylist()
    assert sorted(r["rollout_id"] for r in table) == sorted(ids)
    assert all(r["prompt_token_ids"] and r["response_token_ids"] and r["reward"] is not None for r in table)
