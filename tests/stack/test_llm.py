"""The embedded LLM (llama.cpp + SmolLM2-135M) as agents use it, through ``agl.llm``, and as ``agl up`` runs it."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agl.app import create_app
from agl.config import EMBEDDED_LLM_MODEL, Settings
from agl.errors import LLMError, LLMUnavailable
from agl.llm import AsyncLLMClient, LLMClient, _parse
from agl.stack._process import free_port, port_is_free
from agl.stack.llm import EmbeddedLLM, publish_default_resources, read_memo
from agl.stack.state import read_state
from producers.client import AsyncClient, RetryPolicy
from schemas import LLMResource, ProxyLLMResource, ResourcesPublished, decode
from schemas.topics import RESOURCES
from tests.fixtures.records import read_records
from tests.producers.test_client import serving
from tests.runner.test_emitters import traced
from tests.stack.test_cli import Up, _count_records, agl, assert_all_gone, stack_env

QUESTION = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2 + 3?"}]
FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.05)


def detokenize(endpoint: str, ids: tuple[int, ...]) -> str:
    answer = httpx.post(f"{endpoint.removesuffix('/v1')}/detokenize", json={"tokens": list(ids)})
    content: str = answer.raise_for_status().json()["content"]
    return content


async def test_chat_gives_content_and_the_token_ids_usage_counts(llm_endpoint, llm_model):
    async with AsyncLLMClient(llm_endpoint, model=llm_model) as llm:
        result = await llm.chat(QUESTION, max_tokens=32, temperature=0, seed=7)
    assert result.content and result.response_id and result.usage is not None
    assert result.finish_reason in ("stop", "length")
    assert result.completion_token_ids is not None and result.prompt_token_ids is not None
    assert len(result.completion_token_ids) == result.usage.completion_tokens
    assert len(result.prompt_token_ids) == result.usage.prompt_tokens
    assert result.completion_logprobs is not None and all(p <= 0 for p in result.completion_logprobs)
    # Asked with one alternative per token (llama.cpp's default is 20, the bulk of a recorded span).
    assert {len(e["top_logprobs"]) for e in result.raw["choices"][0]["logprobs"]["content"]} == {1}
    # The ids are the tokens themselves: they spell the reply (plus the end-of-turn token on "stop") and the prompt.
    assert detokenize(llm_endpoint, result.completion_token_ids).startswith(result.content)
    assert "What is 2 + 3?" in detokenize(llm_endpoint, result.prompt_token_ids)


def test_blocking_client_from_a_resource_honours_its_sampling(llm_endpoint, llm_model):
    resource = LLMResource(endpoint=llm_endpoint, model=llm_model, sampling_parameters={"max_tokens": 5})
    with LLMClient.from_resource(resource) as llm:
        capped = llm.chat(QUESTION, temperature=0)
        longer = llm.chat(QUESTION, temperature=0, max_tokens=9)
    assert capped.finish_reason == "length" and capped.usage is not None and capped.usage.completion_tokens == 5
    assert capped.completion_token_ids is not None and len(capped.completion_token_ids) == 5
    assert longer.usage is not None and longer.usage.completion_tokens == 9
    # The same prompt, so the same prompt ids: the second call hit llama.cpp's prompt cache and still counts them all.
    assert capped.prompt_token_ids == longer.prompt_token_ids
    assert capped.prompt_token_ids is not None and len(capped.prompt_token_ids) == longer.usage.prompt_tokens


def test_without_token_ids_nothing_extra_is_asked(llm_endpoint, llm_model):
    with LLMClient(llm_endpoint, model=llm_model, token_ids=False) as llm:
        result = llm.chat(QUESTION, max_tokens=4)
    assert result.content and result.usage is not None
    assert (result.completion_token_ids, result.prompt_token_ids, result.completion_logprobs) == (None, None, None)


def test_an_endpoint_without_token_ids_gives_none_not_an_error():
    # An OpenAI answer: logprobs entries carry no token id (a scripted body, the parser's only input).
    openai_answer = {
        "id": "chatcmpl-1",
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "5"},
                "logprobs": {"content": [{"token": "5", "logprob": -0.1, "bytes": [53], "top_logprobs": []}]},
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
    result = _parse(openai_answer)
    assert (result.content, result.finish_reason, result.response_id) == ("5", "stop", "chatcmpl-1")
    assert result.usage is not None and result.usage.total_tokens == 13
    assert result.completion_token_ids is None and result.completion_logprobs is None
    with pytest.raises(LLMError, match="not a chat completion"):
        _parse({"error": "nope"})


async def test_through_our_proxy_the_client_asks_for_nothing_the_proxy_recorded():
    # A scripted backend answering as our LLM proxy does in front of llama.cpp (its x-agl-span-id header and
    # llama.cpp's timings): the exact paths and bodies the client sends are what is under test.
    seen: list[tuple[str, dict[str, object]]] = []
    app = FastAPI()

    @app.post("/rollout/ro-1/attempt/at-1/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        seen.append((request.url.path, await request.json()))
        entry = {"id": 20, "token": "5", "logprob": -0.1, "bytes": [53], "top_logprobs": []}
        answer = {
            "id": "chatcmpl-1", "model": "m",
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "5"},
                         "logprobs": {"content": [entry]}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}, "timings": {"prompt_n": 9},
        }  # fmt: skip
        return JSONResponse(answer, headers={"x-agl-span-id": "00f067aa0ba902b7"})

    async with serving(app, free_port()) as url:
        resource = ProxyLLMResource(endpoint=url, model="m")
        async with AsyncLLMClient.from_resource(resource, rollout_id="ro-1", attempt_id="at-1", api_key="k") as llm:
            with traced() as t:
                result = await llm.chat(QUESTION, max_tokens=1)
    # One request: no /apply-template nor /tokenize (the proxy asked them itself); logprobs for the ids, with the
    # fewest alternatives llama.cpp allows.
    assert [path for path, _ in seen] == ["/rollout/ro-1/attempt/at-1/v1/chat/completions"]
    assert (seen[0][1]["logprobs"], seen[0][1]["top_logprobs"]) == (True, 1)
    assert result.completion_token_ids == (20,) and result.prompt_token_ids is None
    # The client's own span keeps the ids it has and leaves the logprobs to the proxy's span.
    span = t.named("openai.chat.completion")
    assert span.span_id == result.span_id and span.attributes["response_token_ids"] == [20]
    assert "logprobs.content" not in span.attributes


def test_a_bad_request_is_refused_at_once_not_retried(llm_endpoint, llm_model):
    with LLMClient(llm_endpoint, model=llm_model, retry=RetryPolicy(attempts=3, backoff_s=5)) as llm:
        t0 = time.monotonic()
        with pytest.raises(LLMError, match="400") as caught:
            llm.chat(QUESTION, max_tokens="many")
    assert not isinstance(caught.value, LLMUnavailable) and not caught.value.retriable
    assert time.monotonic() - t0 < 5  # no backoff slept


@pytest.fixture
def hanging_up_server() -> Iterator[tuple[str, list[int]]]:
    """A TCP server that accepts each connection and closes it at once; counts the connections."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.1)
    accepted: list[int] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", accepted
    done.set()
    thread.join()
    sock.close()


async def test_an_endpoint_that_hangs_up_is_retried_a_bounded_number_of_times(hanging_up_server):
    url, accepted = hanging_up_server
    async with AsyncLLMClient(url, model="m", retry=FAST_RETRY) as llm:
        with pytest.raises(LLMUnavailable, match="after 3 attempts") as caught:
            await llm.chat(QUESTION, max_tokens=4)
    assert caught.value.retriable
    # httpx may open one more connection per request when the first closes before a reply: at most 2 each.
    assert 3 <= len(accepted) <= 6


def test_an_unreachable_endpoint_raises_the_retriable_error_after_backing_off():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with LLMClient(url, model="m", retry=RetryPolicy(attempts=3, backoff_s=0.1)) as llm:
        t0 = time.monotonic()
        with pytest.raises(LLMUnavailable, match="after 3 attempts") as caught:
            llm.chat(QUESTION)
    assert caught.value.retriable
    assert 0.3 <= time.monotonic() - t0 < 3  # slept 0.1 then 0.2, and gave up


async def test_the_embedded_server_runs_in_its_own_session_and_stops_cleanly(tmp_path):
    llm = EmbeddedLLM(port=free_port(), log_path=tmp_path / "llm.log")
    await llm.start(60)
    proc = llm.process
    assert proc is not None and proc.pid is not None
    assert os.getsid(proc.pid) == proc.pid  # a Ctrl-C in the terminal reaches only the supervisor
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{llm.port}/health")).json() == {"status": "ok"}
    t0 = time.monotonic()
    await llm.stop()
    assert proc.returncode == 0 and time.monotonic() - t0 < 5
    assert port_is_free(llm.port)
    await llm.stop()  # a second stop is harmless
    assert "agl llm: SmolLM2-135M-Instruct at" in (tmp_path / "llm.log").read_text()


# -- the default resources `agl up` publishes -------------------------------------------------------------------
@pytest_asyncio.fixture(loop_scope="session")
async def api_url(kafka_bootstrap, kafka_topics, pg_url) -> AsyncIterator[str]:
    app: FastAPI = create_app(Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60), serving(app, free_port()) as url:
        yield url


async def _published(kafka_bootstrap: str, topic: str, count: int) -> list[ResourcesPublished]:
    events = [decode(r.value, r.headers) for r in await read_records(kafka_bootstrap, topic, count)]
    assert all(isinstance(e, ResourcesPublished) for e in events)
    return events  # type: ignore[return-value]


@pytest.mark.kafka
@pytest.mark.pg
async def test_default_resources_are_published_once_per_endpoint_and_model(
    api_url, pg_url, kafka_bootstrap, kafka_topics, tmp_path
):
    def publish(endpoint: str = "http://127.0.0.1:1/v1", model: str = "m1", epoch: str = "e1"):
        return publish_default_resources(
            api_url=api_url, database_url=pg_url, data_dir=tmp_path, endpoint=endpoint, model=model,
            api_key_ref=None, log_epoch=epoch,
        )  # fmt: skip

    assert await publish() == 1
    assert await publish() is None  # a restart with the same LLM publishes nothing
    assert await publish(model="m2") == 2
    async with AsyncClient(api_url, retry=FAST_RETRY) as client:  # someone else makes another version latest
        await client.publish_resources({"llm": LLMResource(endpoint="http://x/v1", model="x")}, resources_id="default")
    assert await publish(model="m2") == 4
    assert await publish(model="m2", epoch="e2") == 5  # a reset log lost the event: publish again
    assert read_memo(tmp_path).resources_version == 5

    events = await _published(kafka_bootstrap, RESOURCES.full_name(kafka_topics), 5)
    assert [e.resources_version for e in events] == [1, 2, 3, 4, 5]
    assert {e.resources_id for e in events} == {"default"}
    last = events[-1].resources["llm"]
    assert isinstance(last, LLMResource) and (last.endpoint, last.model) == ("http://127.0.0.1:1/v1", "m2")
    proxy = events[-1].resources["proxy_llm"]  # the same model through this API's LLM proxy
    assert isinstance(proxy, ProxyLLMResource) and (proxy.endpoint, proxy.model) == (api_url, "m2")


@pytest.mark.slow
def test_agl_up_serves_the_llm_shows_it_and_publishes_it_once_across_restarts(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="kafka")
    bootstrap = f"127.0.0.1:{env['AGL_KAFKA_PORT']}"
    up = Up(env)
    state = read_state(tmp_path / "d")
    assert state is not None and state.llm_endpoint is not None and "llm" in state.components
    status = agl(env, "status")
    assert f"llm       up    {state.llm_endpoint}" in status.stdout, status.stdout
    with LLMClient(state.llm_endpoint, model=EMBEDDED_LLM_MODEL) as llm:
        assert llm.chat(QUESTION, max_tokens=4).usage is not None
    assert up.interrupt()[0] == 0
    assert_all_gone(list(state.components.values()))

    again = Up(env)  # the same port again, so the same endpoint: nothing to republish
    restarted = read_state(tmp_path / "d")
    assert restarted is not None and restarted.llm_endpoint == state.llm_endpoint
    events = asyncio.run(_published(bootstrap, RESOURCES.full_name(""), 1))
    count = asyncio.run(_count_records(bootstrap, RESOURCES.full_name("")))
    assert again.interrupt()[0] == 0
    assert [(e.resources_id, e.resources_version) for e in events] == [("default", 1)]
    published = events[0].resources["llm"]
    assert isinstance(published, LLMResource)
    assert (published.endpoint, published.model) == (state.llm_endpoint, EMBEDDED_LLM_MODEL)
    assert count == 1


def test_an_external_endpoint_needs_a_model_name(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="tansu", AGL_LLM_ENDPOINT="http://127.0.0.1:9/v1")
    result = agl(env, "up")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "agl up: AGL_LLM_ENDPOINT is set but AGL_LLM_MODEL is not; name the model to use"
    )
