"""The SDK (agl.AsyncClient, agl.Client) against the API served by uvicorn on a free port, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

import agl
from agl.stack._process import free_port
from producers.outbox import OutboxRelay
from schemas import LLMResource, RolloutConfig, RolloutEnqueued, decode, parse_token
from schemas.topics import ROLLOUTS
from tests.fixtures.records import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

FAST_RETRY = agl.RetryPolicy(attempts=3, backoff_s=0.05)


@contextlib.asynccontextmanager
async def serving(app: FastAPI, port: int, delay_s: float = 0.0) -> AsyncIterator[str]:
    """Serve ``app`` on ``port`` (after ``delay_s``); the lifespan is the app's own, already running."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))

    async def run() -> None:
        await asyncio.sleep(delay_s)
        await server.serve()

    task = asyncio.create_task(run())
    for _ in range(0 if delay_s else 1000):  # listening before the test's first call (uvicorn has only a flag)
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _rollout_id(record: Any) -> str:
    event = decode(record.value, record.headers)
    assert isinstance(event, RolloutEnqueued)
    return event.rollout_id


def span(i: int) -> agl.SpanIn:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    return agl.SpanIn(
        rollout_id="ro-c", attempt_id="at-1", trace_id="1" * 32, span_id=f"{i:016x}", name="step", start_time=t
    )


async def test_async_client_sends_every_command(app, kafka_bootstrap, kafka_topics):
    async with serving(app, free_port()) as url, agl.AsyncClient(url, correlation_id="nb-1") as client:
        created = await client.enqueue_rollout({"q": 1}, rollout_id="ro-c", config=RolloutConfig(max_attempts=2))
        again = await client.enqueue_rollout({"q": 1}, rollout_id="ro-c", config=RolloutConfig(max_attempts=2))
        many = await client.enqueue_rollouts([{"input": 2}, agl.RolloutIn(input=3)])
        cancelled = await client.cancel_rollout("ro-c", reason="done")
        resources = await client.publish_resources({"llm": LLMResource(endpoint="http://llm", model="m")})
        document = await client.upsert_document(agl.DocumentIn(collection="faq", text="hi", document_id="d"))
        deleted = await client.delete_document("faq", "d")
        rewards = await client.assign_rewards([agl.RewardIn(rollout_id="ro-c", value=1.0)])
        spans = await client.record_spans([span(1), span(2)])
    assert created.rollouts[0].created and not again.rollouts[0].created
    assert again.rollouts[0].event_id == created.rollouts[0].event_id
    assert [r.rollout_id.startswith("ro-") for r in many.rollouts] == [True, True]
    assert parse_token(cancelled.position)[0].topic == ROLLOUTS.full_name(kafka_topics)
    assert (resources.resources_version, document.document_version, deleted.document_version) == (1, 1, None)
    assert len(rewards.event_ids) == 1 and spans.sequence_ids == [1, 2]
    events = [
        decode(r.value, r.headers) for r in await read_records(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 5)
    ]
    enqueued = [e for e in events if isinstance(e, RolloutEnqueued)]
    assert sorted(str(e.input) for e in enqueued) == ["2", "3", "{'q': 1}"]
    assert len(events) == 5, "3 rollouts (no twin of ro-c), 1 cancellation and its decision"
    assert {e.correlation_id for e in events} == {"nb-1"}


async def test_sync_client_and_4xx_is_not_retried(app, kafka_bootstrap, kafka_topics):
    requests: list[httpx.Request] = []
    async with serving(app, free_port()) as url:
        http = httpx.Client(base_url=url, event_hooks={"request": [requests.append]})
        with agl.Client(url, retry=FAST_RETRY, http=http) as client:
            answer = await asyncio.to_thread(client.enqueue_rollout, "hello", mode="val")
            assert len(requests) == 1
            with pytest.raises(agl.CommandRejected, match=r"422.*rollout_id: String should match pattern") as info:
                await asyncio.to_thread(client.cancel_rollout, "bad id!")
    assert info.value.status_code == 422 and not info.value.retriable
    assert len(requests) == 2, "a 4xx answer is final"
    (record,) = await read_records(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 1)
    assert _rollout_id(record) == answer.rollouts[0].rollout_id


async def test_connection_errors_are_retried_until_the_api_answers(app, kafka_bootstrap, kafka_topics):
    port = free_port()
    retry = agl.RetryPolicy(attempts=10, backoff_s=0.1, max_backoff_s=0.3)
    async with serving(app, port, delay_s=0.5), agl.AsyncClient(f"http://127.0.0.1:{port}", retry=retry) as client:
        answer = await client.enqueue_rollout("late")
    records = await read_records(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 1)
    assert [_rollout_id(r) for r in records] == [answer.rollouts[0].rollout_id]


async def test_5xx_is_retried_then_reported_and_the_accepted_command_is_published_once(
    app, kafka_bootstrap, kafka_topics
):
    """While nothing can publish (the relay is down), a command is committed but answered 503; the client retries
    with its Idempotency-Key, then gives up. Once the relay is back, the command's event is published once."""
    requests: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        requests.append(request)

    await app.state.relay.stop()
    app.state.relay.publish_wait_s = 0.2
    replacement = OutboxRelay(app.state.settings.database_url, app.state.publisher)
    try:
        async with serving(app, free_port()) as url:
            http = httpx.AsyncClient(base_url=url, event_hooks={"request": [count]})
            async with agl.AsyncClient(url, retry=FAST_RETRY, http=http) as client:
                with pytest.raises(agl.ApiUnavailable, match=r"no answer after 3 attempts \(503"):
                    await client.enqueue_rollout("never")
                assert len(requests) == 3
                assert len({r.headers["Idempotency-Key"] for r in requests}) == 1, "retries reuse the call's key"

                async def recover() -> None:
                    await asyncio.sleep(0.3)
                    await replacement.start()
                    app.state.relay = replacement

                patient = agl.RetryPolicy(attempts=20, backoff_s=0.1, max_backoff_s=0.2)
                async with agl.AsyncClient(url, retry=patient) as waiting:
                    answer, _ = await asyncio.gather(waiting.enqueue_rollout("eventually"), recover())
    finally:
        await replacement.stop()
    records = await read_records(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 2)
    inputs = sorted(orjson.loads(r.value)["input"] for r in records)
    assert inputs == ["eventually", "never"], "the accepted command is published once, no twin of its retries"
    assert answer.rollouts[0].rollout_id in {_rollout_id(r) for r in records}
