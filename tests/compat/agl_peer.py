"""Stock Agent Lightning 0.3, unmodified, pointed at our server. Runs in its own environment (tests/compat/agl_venv.py)
and imports nothing of ours; prints one JSON object on its last line.

    python agl_peer.py runner N          # a stock LitAgentRunner (Trainer, role runner) that runs N rollouts
    python agl_peer.py algorithm N URL   # LightningStoreClient: resources, enqueue N, wait, read back
    python agl_peer.py v01 N URL         # the v0.1 AgentLightningClient: N tasks, their resources, their results
    python agl_peer.py spans N URL ROLLOUT ATTEMPT CONCURRENCY  # N spans as the client sends them, timed

The runner finds the server as stock runners do: ``AGL_CURRENT_ROLE=runner AGL_SERVER_HOST AGL_SERVER_PORT``. Its
agent asks the LLM of the ``main_llm`` resource (a real one) inside an ``openai.chat.completion`` span, traced by
the stock OTel tracer (so exported to our ``POST /v1/traces``), and returns a float (a reward span, through
``POST /v1/agl/spans/next`` and ``/v1/agl/spans``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import agentlightning as agl  # type: ignore[import-not-found]
from agentlightning.store.client_server import LightningStoreClient  # type: ignore[import-not-found]
from agentlightning.tracer.otel import OtelTracer  # type: ignore[import-not-found]
from agentlightning.types import LLM, PromptTemplate  # type: ignore[import-not-found]
from openai import OpenAI  # type: ignore[import-not-found]
from opentelemetry import trace


class ArithmeticAgent(agl.LitAgent):  # type: ignore[misc]
    def rollout(self, task: Any, resources: Any, rollout: Any) -> float:
        llm = resources["main_llm"]
        prompt = resources["prompt"].template.format(q=task["q"])
        client = OpenAI(base_url=llm.endpoint, api_key="unused")
        with trace.get_tracer("agl-peer").start_as_current_span("openai.chat.completion") as span:
            answer = client.chat.completions.create(
                model=llm.model, messages=[{"role": "user", "content": prompt}], max_tokens=8, temperature=0
            )
            text = answer.choices[0].message.content or ""
            span.set_attribute("gen_ai.request.model", llm.model)
            span.set_attribute("gen_ai.response.id", answer.id)
            span.set_attribute("gen_ai.prompt.0.role", "user")
            span.set_attribute("gen_ai.prompt.0.content", prompt)
            span.set_attribute("gen_ai.completion.0.role", "assistant")
            span.set_attribute("gen_ai.completion.0.content", text)
        return 1.0 if str(task["a"]) in text else 0.0


def run_runner(n: int) -> dict[str, Any]:
    trainer = agl.Trainer(n_runners=1, max_rollouts=n, tracer=OtelTracer(), strategy="cs")
    trainer.fit(ArithmeticAgent())
    return {"runner": "done"}


async def run_algorithm(n: int, url: str, llm_endpoint: str, llm_model: str) -> dict[str, Any]:
    store = LightningStoreClient(url)
    try:
        resources = await store.add_resources(
            {
                "main_llm": LLM(endpoint=llm_endpoint, model=llm_model),
                "prompt": PromptTemplate(template="What is {q}? Answer with a number.", engine="f-string"),
            }
        )
        enqueued = [await store.enqueue_rollout(input={"q": f"{k} + 1", "a": k + 1}, mode="train") for k in range(n)]
        ids = [r.rollout_id for r in enqueued]
        finished: dict[str, Any] = {}
        deadline = time.monotonic() + 240
        while len(finished) < n and time.monotonic() < deadline:
            for r in await store.wait_for_rollouts(rollout_ids=ids, timeout=0.1):
                finished[r.rollout_id] = r
            await asyncio.sleep(0.5)
        out: dict[str, Any] = {
            "resources_id": resources.resources_id,
            "latest_resources_id": (await store.get_latest_resources()).resources_id,
            "enqueued": [
                {"rollout_id": r.rollout_id, "status": r.status, "resources_id": r.resources_id} for r in enqueued
            ],
            "finished": {i: r.status for i, r in finished.items()},
            "spans": {},
            "attempts": {},
        }
        for rollout_id in ids:
            spans = await store.query_spans(rollout_id, attempt_id="latest")
            out["spans"][rollout_id] = sorted(s.name for s in spans)
            latest = await store.get_latest_attempt(rollout_id)
            out["attempts"][rollout_id] = None if latest is None else [latest.status, latest.worker_id]
        page = await store.query_rollouts(status_in=["succeeded"])
        out["succeeded_total"] = page.total
        got = await store.get_rollout_by_id(ids[0])
        out["get_rollout"] = None if got is None else got.status
        out["missing_rollout"] = await store.get_rollout_by_id("ro-does-not-exist")
        workers = await store.query_workers()
        out["workers"] = sorted(w.worker_id for w in workers)
        return out
    finally:
        await store.close()


def run_v01(n: int, url: str) -> dict[str, Any]:
    """A v0.1 agent's loop by hand: poll a task, fetch its resources, post the result with an SDK-traced span."""
    from agentlightning.client import AgentLightningClient  # type: ignore[import-not-found]
    from agentlightning.types import RolloutLegacy
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    client = AgentLightningClient(url + "/ignored/prefix/", poll_interval=0.5)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    out: dict[str, Any] = {"tasks": [], "latest": None}
    latest = client.get_latest_resources()
    out["latest"] = None if latest is None else [latest.resources_id, latest.version]
    for _ in range(n):
        task = client.poll_next_task()
        resources = client.get_resources_by_id(task.resources_id) if task.resources_id else None
        exporter.clear()
        with provider.get_tracer("v01").start_as_current_span("agent.step") as span:
            span.set_attribute("task.input", json.dumps(task.input))
        trace_json = [json.loads(s.to_json()) for s in exporter.get_finished_spans()]
        answer = client.post_rollout(RolloutLegacy(rollout_id=task.rollout_id, final_reward=0.5, trace=trace_json))
        out["tasks"].append(
            {
                "rollout_id": task.rollout_id,
                "input": task.input,
                "resources_id": task.resources_id,
                "resources": None if resources is None else sorted(resources.resources),
                "answer": answer,
                "span_id": trace_json[0]["context"]["span_id"],
            }
        )
    return out


async def run_spans(n: int, url: str, rollout_id: str, attempt_id: str, concurrency: str) -> dict[str, Any]:
    """``n`` spans the way the stock runner sends them (``/spans/next`` then ``/spans``, one request each), from
    ``concurrency`` loops at once; spans per second."""
    from agentlightning.types import Span

    store = LightningStoreClient(url)
    loops = int(concurrency)

    async def one_loop(k: int) -> None:
        for i in range(k, n, loops):
            seq = await store.get_next_span_sequence_id(rollout_id, attempt_id)
            span = Span(
                rollout_id=rollout_id, attempt_id=attempt_id, sequence_id=seq, trace_id=f"{1:032x}",
                span_id=f"{i + 1:016x}", parent_id=None, name="step", status={"status_code": "OK"},
                attributes={"i": i}, events=[], links=[], start_time=time.time(), end_time=time.time(),
                context=None, parent=None, resource={"attributes": {}, "schema_url": ""},
            )  # fmt: skip
            await store.add_span(span)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one_loop(k) for k in range(loops)))
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    return {"spans": n, "seconds": elapsed, "spans_per_s": n / elapsed}


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    args = sys.argv[3:]
    if mode == "runner":
        result = run_runner(n)
    elif mode == "v01":
        result = run_v01(n, *args)
    elif mode == "spans":
        result = asyncio.run(run_spans(n, *args))
    else:
        result = asyncio.run(run_algorithm(n, *args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
