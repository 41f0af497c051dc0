"""The LLM proxy (producers/llm_proxy.py) over real HTTP: the API served by uvicorn with its real lifespan, real
Kafka and PostgreSQL, the resources read model projected, and backends that are either a scripted
OpenAI-compatible server at the HTTP boundary (``ScriptedOpenAIBackend``, vLLM-shaped or plain) or the real
llama.cpp server. Each call must come back as the backend sent it and end as one ``span.recorded`` on the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from agl.app import create_app
from agl.stack._process import free_port
from consumers.worker import ProjectionWorker
from projections.resources import PROJECTION as RESOURCES
from schemas import SpanRecorded, decode
from schemas.spans import SpanStatus
from schemas.topics import SPANS
from tests.consumers.helpers import running
from tests.fixtures.records import read_records
from tests.fixtures.scripted_llm import (
    JsonReply,
    ScriptedOpenAIBackend,
    StreamReply,
    vllm_chat_chunks,
    vllm_chat_reply,
)
from tests.producers.conftest import api_settings

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}]


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """``app`` (its lifespan already running) on a free port."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the API did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def proxy_stack(app: FastAPI, kafka_bootstrap: str, pg_url: str, prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API on a real port with the resources read model projected; a client of it."""
    worker = ProjectionWorker(
        RESOURCES, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False
    )
    async with running(worker), serving(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def api(app: FastAPI, kafka_bootstrap: str, kafka_topics: str, pg_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with proxy_stack(app, kafka_bootstrap, pg_url, kafka_topics) as http:
        yield http


async def claimed(
    http: httpx.AsyncClient, rollout_id: str, endpoint: str, *, model: str = "served-model", **llm: Any
) -> str:
    """Resources naming ``endpoint`` as the llm, a rollout pinned to them, claimed: its attempt id."""
    resources = {
        "llm": {"resource_type": "llm", "endpoint": endpoint, "model": model, **llm},
        "main_llm": {"resource_type": "proxy_llm", "endpoint": str(http.base_url), "model": model},
    }
    published = await http.post("/v1/resources", json={"resources_id": f"rs-{rollout_id}", "resources": resources})
    assert published.status_code == 202, published.text
    seen = await http.get(f"/v1/resources/rs-{rollout_id}", params={"after": published.json()["position"]})
    assert seen.status_code == 200, seen.text
    enqueued = await http.post(
        "/v1/rollouts", json={"rollout_id": rollout_id, "input": {}, "resources_id": f"rs-{rollout_id}"}
    )
    assert enqueued.status_code == 202, enqueued.text
    assert (await http.post("/v1/workers/register", json={"worker_id": "w-proxy"})).status_code == 202
    claims = (await http.post("/v1/rollouts/dequeue", json={"worker_id": "w-proxy"})).json()["claims"]
    assert [c["rollout_id"] for c in claims] == [rollout_id]
    attempt_id: str = claims[0]["attempt_id"]
    return attempt_id


async def recorded_spans(kafka_bootstrap: str, prefix: str, count: int) -> list[SpanRecorded]:
    records = await read_records(kafka_bootstrap, SPANS.full_name(prefix), count)
    spans = [e for e in (decode(r.value, r.headers) for r in records) if isinstance(e, SpanRecorded)]
    assert len(spans) == len(records) == count  # one span per call, nothing else
    return sorted(spans, key=lambda s: s.sequence_id)


def sse_payloads(lines: list[str]) -> list[dict[str, Any]]:
    return [orjson.loads(line[5:]) for line in lines if line.startswith("data:") and line != "data: [DONE]"]


# -- vLLM-shaped backend ---------------------------------------------------------------------------------------
async def test_a_call_attributed_by_headers_is_forwarded_to_the_rollouts_llm_and_recorded_with_token_ids(
    api, kafka_bootstrap, kafka_topics, monkeypatch
):
    monkeypatch.setenv("AGL_TEST_BACKEND_KEY", "sk-backend")
    async with ScriptedOpenAIBackend("vllm") as backend:
        attempt_id = await claimed(
            api, "ro-px1", backend.endpoint, api_key_ref="env:AGL_TEST_BACKEND_KEY",
            sampling_parameters={"temperature": 0.3, "max_tokens": 64},
        )  # fmt: skip
        reply = vllm_chat_reply("4", prompt_token_ids=[1, 2, 3, 4], token_ids=[52, 2])
        backend.script(JsonReply(reply))
        answer = await api.post(
            "/v1/chat/completions",
            json={"model": "whatever-the-agent-says", "messages": MESSAGES, "max_tokens": 8},
            headers={"x-rollout-id": "ro-px1", "x-attempt-id": attempt_id, "authorization": "Bearer dummy"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == reply  # relayed as the backend sent it
    sent = backend.received[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.body == {
        "model": "served-model",  # the resource's model, whatever the agent asked for
        "messages": MESSAGES,
        "temperature": 0.3,  # the resource's sampling parameters are defaults...
        "max_tokens": 8,  # ...that the agent's own values override
        "return_token_ids": True,  # vLLM accepts it (the probe found /version)
    }
    assert sent.headers["authorization"] == "Bearer sk-backend"  # the resource's key, not the agent's dummy
    [span] = await recorded_spans(kafka_bootstrap, kafka_topics, 1)
    assert (span.rollout_id, span.attempt_id, span.sequence_id) == ("ro-px1", attempt_id, 1)
    assert span.span_id == answer.headers["x-agl-span-id"] and answer.headers["x-agl-sequence-id"] == "1"
    assert (span.name, span.kind, span.status.status_code, span.parent_id) == (
        "openai.chat.completion", "CLIENT", "OK", None,
    )  # fmt: skip
    attributes = span.attributes
    assert attributes["prompt_token_ids"] == [1, 2, 3, 4]
    assert attributes["response_token_ids"] == [52, 2]
    assert {k: v for k, v in attributes.items() if k.startswith(("gen_ai.", "agentlightning."))} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "vllm",
        "gen_ai.provider.name": "vllm",
        "gen_ai.request.model": "served-model",
        "gen_ai.request.temperature": 0.3,
        "gen_ai.request.max_tokens": 8,
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "Be brief.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "2 + 2?",
        "gen_ai.response.id": "chatcmpl-vllm-1",
        "gen_ai.response.model": "served-model",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "4",
        "gen_ai.completion.0.finish_reason": "stop",
        "gen_ai.usage.input_tokens": 4,
        "gen_ai.usage.output_tokens": 2,
        "agentlightning.resources_id": "rs-ro-px1",
        "agentlightning.resources_version": 1,
    }


async def test_a_stream_is_relayed_chunk_by_chunk_and_its_span_assembles_the_token_id_deltas(
    api, kafka_bootstrap, kafka_topics
):
    async with ScriptedOpenAIBackend("vllm") as backend:
        attempt_id = await claimed(api, "ro-px2", backend.endpoint)
        chunks = vllm_chat_chunks(
            [("The", [10]), (" answer", [11, 12]), (" is 4", [13, 14])], prompt_token_ids=[7, 8, 9]
        )
        stream = StreamReply(chunks, hold_after=2)
        backend.script(stream)
        base = f"/rollout/ro-px2/attempt/{attempt_id}/v1"  # what ProxyLLMResource.routed_endpoint builds
        traceparent = f"00-{'ab' * 16}-{'cd' * 8}-01"
        lines: list[str] = []
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        async with (
            asyncio.timeout(30),  # a proxy that waited for the whole stream would never show the first chunks
            api.stream("POST", f"{base}/chat/completions", json=body, headers={"traceparent": traceparent}) as answer,
        ):
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            async for line in answer.aiter_lines():
                lines.append(line)
                if len(sse_payloads(lines)) == 2:
                    # The first chunks reached the agent while the backend is still generating: not de-streamed.
                    assert not stream.finished
                    stream.release.set()
    assert sse_payloads(lines) == chunks  # every chunk as sent, upstream ids unchanged
    assert [line for line in lines if line][-1] == "data: [DONE]"
    [span] = await recorded_spans(kafka_bootstrap, kafka_topics, 1)
    assert (span.rollout_id, span.attempt_id, span.status) == ("ro-px2", attempt_id, SpanStatus(status_code="OK"))
    assert (span.trace_id, span.parent_id) == ("ab" * 16, "cd" * 8)  # a child of the caller's span
    attributes = span.attributes
    assert attributes["prompt_token_ids"] == [7, 8, 9]  # from the first chunk
    assert attributes["response_token_ids"] == [10, 11, 12, 13, 14]  # the deltas, in order
    assert attributes["gen_ai.completion.0.content"] == "The answer is 4"
    assert attributes["gen_ai.response.id"] == "chatcmpl-vllm-s1"
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (3, 5)
    assert attributes["gen_ai.request.stream"] is True


async def test_a_client_leaving_mid_stream_closes_the_backends_stream_and_still_gets_its_span(
    api, kafka_bootstrap, kafka_topics
):
    async with ScriptedOpenAIBackend("vllm") as backend:
        attempt_id = await claimed(api, "ro-px3", backend.endpoint)
        chunks = vllm_chat_chunks([("Four", [40]), (" and", [41]), (" more", [42])], prompt_token_ids=[5, 6])
        stream = StreamReply(chunks, hold_after=2)
        backend.script(stream)
        headers = {"x-rollout-id": "ro-px3", "x-attempt-id": attempt_id}
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        async with (
            asyncio.timeout(30),
            api.stream("POST", "/v1/chat/completions", json=body, headers=headers) as answer,
        ):
            lines: list[str] = []
            async for line in answer.aiter_lines():
                lines.append(line)
                if len(sse_payloads(lines)) == 2:
                    break  # the agent gives up while the backend is still generating
        await asyncio.wait_for(stream.closed.wait(), 10)  # the proxy hung up on the backend too
        assert not stream.finished
    [span] = await recorded_spans(kafka_bootstrap, kafka_topics, 1)
    assert span.status.status_code == "ERROR"
    assert span.status.description is not None and "client disconnected" in span.status.description
    assert span.attributes["error.type"] == "cancelled"
    assert span.attributes["prompt_token_ids"] == [5, 6]
    assert span.attributes["response_token_ids"] == [40]  # what had arrived
    assert span.attributes["gen_ai.completion.0.content"] == "Four"


async def test_a_span_too_large_for_one_record_is_kept_without_its_logprobs(api, kafka_bootstrap, kafka_topics):
    async with ScriptedOpenAIBackend("vllm") as backend:
        await claimed(api, "ro-px9", backend.endpoint)
        reply = vllm_chat_reply("x" * 100, prompt_token_ids=list(range(50)), token_ids=list(range(6000)))
        top = [{"token": "tok", "logprob": -1.5, "bytes": [116, 111, 107]}] * 5
        entries = [{"token": "tok", "logprob": -0.5, "bytes": [116, 111, 107], "top_logprobs": top}] * 6000
        reply["choices"][0]["logprobs"] = {"content": entries}  # about 2 MB: over the 1 MiB record limit
        backend.script(JsonReply(reply))
        answer = await api.post("/v1/chat/completions", json={"messages": MESSAGES}, headers={"x-rollout-id": "ro-px9"})
    assert answer.status_code == 200 and answer.json() == reply
    [span] = await recorded_spans(kafka_bootstrap, kafka_topics, 1)
    assert "logprobs.content" not in span.attributes and span.attributes["agentlightning.truncated"] == "logprobs"
    assert span.attributes["response_token_ids"] == list(range(6000))
    assert span.attributes["gen_ai.completion.0.content"] == "x" * 100


# -- a plain OpenAI-compatible backend -------------------------------------------------------------------------
async def test_completions_go_to_the_newest_attempt_and_a_plain_backend_gets_no_vllm_fields(
    api, kafka_bootstrap, kafka_topics
):
    async with ScriptedOpenAIBackend("openai") as backend:
        attempt_id = await claimed(api, "ro-px4", backend.endpoint)
        reply = {"id": "cmpl-1", "object": "text_completion", "model": "served-model",
                 "choices": [{"index": 0, "text": " 4", "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}  # fmt: skip
        backend.script(JsonReply(reply), JsonReply({"error": {"message": "bad"}}, status=400))
        first = await api.post(
            "/v1/completions", json={"prompt": "2 + 2 =", "max_tokens": 2}, headers={"x-rollout-id": "ro-px4"}
        )
        refused = await api.post("/v1/completions", json={"prompt": "?"}, headers={"x-rollout-id": "ro-px4"})
    assert first.status_code == 200 and first.json() == reply
    assert backend.received[0].body == {"prompt": "2 + 2 =", "max_tokens": 2, "model": "served-model"}
    assert refused.status_code == 400 and refused.json() == {"error": {"message": "bad"}}  # the backend's answer
    ok, failed = await recorded_spans(kafka_bootstrap, kafka_topics, 2)
    assert (ok.name, ok.attempt_id, ok.sequence_id, failed.sequence_id) == ("openai.completion", attempt_id, 1, 2)
    assert ok.attributes["gen_ai.prompt.0.content"] == "2 + 2 ="
    assert ok.attributes["gen_ai.completion.0.content"] == " 4"
    assert ok.attributes["gen_ai.system"] == "openai" and "response_token_ids" not in ok.attributes
    assert (failed.status.status_code, failed.attributes["http.response.status_code"]) == ("ERROR", 400)


# -- refusals and failures -------------------------------------------------------------------------------------
async def test_unknown_rollouts_and_attempts_are_404_and_an_unattributed_call_400(api):
    async with ScriptedOpenAIBackend() as backend:
        await claimed(api, "ro-px5", backend.endpoint)
        body = {"messages": MESSAGES}
        unknown = await api.post("/v1/chat/completions", json=body, headers={"x-rollout-id": "ro-never"})
        no_attempt = await api.post("/rollout/ro-px5/attempt/at-nope/v1/chat/completions", json=body)
        anonymous = await api.post("/v1/chat/completions", json=body)
        not_json = await api.post("/v1/chat/completions", content=b"[1]", headers={"x-rollout-id": "ro-px5"})
    assert backend.received == []
    assert unknown.status_code == 404 and "unknown rollout 'ro-never'" in unknown.json()["error"]["message"]
    assert no_attempt.status_code == 404 and "no attempt 'at-nope'" in no_attempt.json()["detail"]
    assert anonymous.status_code == 400 and "x-rollout-id" in anonymous.json()["error"]["message"]
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_request_error"


async def test_a_backend_that_is_down_is_502_and_the_failed_call_is_recorded(api, kafka_bootstrap, kafka_topics):
    attempt_id = await claimed(api, "ro-px6", f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    answer = await api.post("/v1/chat/completions", json={"messages": MESSAGES}, headers={"x-rollout-id": "ro-px6"})
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["type"] == "upstream_unavailable" and "could not be reached" in error["message"]
    [span] = await recorded_spans(kafka_bootstrap, kafka_topics, 1)
    assert (span.attempt_id, span.status.status_code, span.attributes["error.type"]) == (
        attempt_id, "ERROR", "upstream_unavailable",
    )  # fmt: skip
    assert span.span_id == answer.headers["x-agl-span-id"]


async def test_a_backend_silent_past_the_timeout_is_504_and_a_stalled_stream_ends_with_a_timeout_span(
    kafka_bootstrap, kafka_topics, pg_url
):
    app = create_app(api_settings(kafka_bootstrap, pg_url, kafka_topics, llm_proxy_timeout_s=0.5))
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60),
        proxy_stack(app, kafka_bootstrap, pg_url, kafka_topics) as http,
        ScriptedOpenAIBackend() as backend,
    ):
        await claimed(http, "ro-px7", backend.endpoint)
        stalled = StreamReply(vllm_chat_chunks([("x", [1])], prompt_token_ids=[1]), hold_after=0)
        backend.script(JsonReply(vllm_chat_reply("late", prompt_token_ids=[1], token_ids=[2]), delay_s=2), stalled)
        headers = {"x-rollout-id": "ro-px7"}
        silent = await http.post("/v1/chat/completions", json={"messages": MESSAGES}, headers=headers)
        body = {"messages": MESSAGES, "stream": True}
        stream = await http.post("/v1/chat/completions", json=body, headers=headers)
        stalled.release.set()
    assert silent.status_code == 504 and silent.json()["error"]["type"] == "timeout"
    # The stream's headers came in time, so the agent had a 200 stream, which ends early; its span says why.
    assert stream.status_code == 200 and "data:" not in stream.text
    spans = await recorded_spans(kafka_bootstrap, kafka_topics, 2)
    assert [(s.status.status_code, s.attributes["error.type"]) for s in spans] == [("ERROR", "timeout")] * 2


# -- the real llama.cpp server ---------------------------------------------------------------------------------
async def test_calls_through_to_llama_cpp_record_its_real_token_ids(
    api, kafka_bootstrap, kafka_topics, llm_endpoint, llm_model
):
    attempt_id = await claimed(api, "ro-px8", llm_endpoint, model=llm_model)
    base = f"/rollout/ro-px8/attempt/{attempt_id}/v1"
    body = {"model": "anything", "messages": MESSAGES, "max_tokens": 6, "temperature": 0}
    whole = await api.post(f"{base}/chat/completions", json=body)
    assert whole.status_code == 200, whole.text
    reply = whole.json()
    lines: list[str] = []
    async with api.stream("POST", f"{base}/chat/completions", json={**body, "stream": True}) as streamed:
        assert streamed.status_code == 200
        lines = [line async for line in streamed.aiter_lines()]
    chunks = sse_payloads(lines)
    first, second = await recorded_spans(kafka_bootstrap, kafka_topics, 2)
    assert first.attributes["gen_ai.system"] == "llama.cpp"
    assert first.attributes["gen_ai.response.id"] == reply["id"]
    # The proxy asked for logprobs (llama.cpp's only way to give generated ids) and /tokenize for the prompt.
    generated = [e["id"] for e in reply["choices"][0]["logprobs"]["content"]]
    assert first.attributes["response_token_ids"] == generated
    assert len(generated) == reply["usage"]["completion_tokens"]
    # One alternative per token, not llama.cpp's default 20: the span stays small.
    assert {len(e["top_logprobs"]) for e in reply["choices"][0]["logprobs"]["content"]} == {1}
    assert {len(e["top_logprobs"]) for e in json.loads(str(first.attributes["logprobs.content"]))} == {1}
    prompt_ids = first.attributes["prompt_token_ids"]
    assert isinstance(prompt_ids, list) and len(prompt_ids) == reply["usage"]["prompt_tokens"]
    # Streamed: the ids collected from each chunk's logprobs, and the same prompt ids.
    streamed_ids = [
        e["id"] for c in chunks for ch in c["choices"] for e in (ch.get("logprobs") or {}).get("content", [])
    ]
    assert streamed_ids and second.attributes["response_token_ids"] == streamed_ids
    assert second.attributes["prompt_token_ids"] == prompt_ids
    content = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert second.attributes["gen_ai.completion.0.content"] == content
    assert {c["id"] for c in chunks} == {second.attributes["gen_ai.response.id"]}
    # A client that names a number of alternatives gets it.
    asked = await api.post(f"{base}/chat/completions", json={**body, "logprobs": True, "top_logprobs": 3})
    assert {len(e["top_logprobs"]) for e in asked.json()["choices"][0]["logprobs"]["content"]} == {3}
