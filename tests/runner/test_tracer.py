"""The tracer in the agent process, through a real runner, API, Kafka and PostgreSQL (and the real LLM)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace

import agl
from agl.runner import Runner, RunnerOptions
from agl.span_records import batches
from examples.math_agent import math_agent
from producers.errors import ApiUnavailable
from producers.models import SpanIn
from schemas import TOPIC_BY_EVENT, LLMResource, RewardAssigned, SpanRecorded, decode
from tests.fixtures.events import seen_as

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


async def on_the_log(bootstrap: str, prefix: str, kind: type[Any]) -> list[Any]:
    """Every event of ``kind`` on its topic, read up to the end offsets as they are now."""
    topic = TOPIC_BY_EVENT[kind].full_name(prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            partitions = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Any] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [e for r in records for e in seen_as(kind, decode(r.value, r.headers))]
        return found
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # a fresh consumer knows no topic yet
    return consumer.partitions_for_topic(topic) or set()


async def run_agent(
    client: Any, agent: Any, tasks: list[Any], tag: str, resources_id: str | None = None, **options: Any
) -> tuple[Runner, list[str]]:
    """Enqueue ``tasks`` for a runner of this test only (a capability of its own) and run them all.

    ``resources_id`` pins resources just published: "the latest" is read from a read model that may lag.
    """
    ids = [f"ro-{tag}-{i}" for i in range(len(tasks))]
    for rollout_id, task in zip(ids, tasks, strict=True):
        await client.enqueue_rollout(
            task, rollout_id=rollout_id, required_capabilities=[tag], resources_id=resources_id
        )
    opts = RunnerOptions(capabilities=(tag,), max_rollouts=len(tasks), heartbeat_s=1.0, **options)
    runner = Runner(agent, client, opts)
    ends = await asyncio.wait_for(runner.run(), 180)
    assert ends == Counter({"succeeded": len(tasks)}), [r.error for r in runner.records]
    return runner, ids


def attempt_of(runner: Runner, rollout_id: str) -> str:
    (record,) = [r for r in runner.records if r.rollout_id == rollout_id]
    return record.attempt_id


# -- agents ---------------------------------------------------------------------------------------------------
@agl.rollout
async def plain_otel_async(task):
    """Spans of a user's own plain OpenTelemetry tracer, nested, with an event; in an async agent."""
    tracer = trace.get_tracer("my.agent")
    with tracer.start_as_current_span("plan", attributes={"task.n": task["n"]}) as plan:
        plan.add_event("thinking", {"step": 1})
        for i in range(task.get("steps", 2)):
            with tracer.start_as_current_span(f"tool.{i}", kind=trace.SpanKind.CLIENT):
                await asyncio.sleep(task.get("sleep_s", 0))


@agl.rollout
def plain_otel_sync(task):
    """The same in a sync agent (run in the runner's thread), plus a thread started without the context."""
    tracer = trace.get_tracer("my.agent")
    with tracer.start_as_current_span("plan", attributes={"task.n": task["n"]}):
        with tracer.start_as_current_span("tool.0"):
            pass
        parent = trace.set_span_in_context(trace.get_current_span())
        # A bare thread loses the context variables; the span still joins its parent's attempt.
        worker = threading.Thread(target=lambda: tracer.start_span("in.thread", context=parent).end())
        worker.start()
        worker.join()


@agl.rollout
def rewarded_with_spans(task):
    with trace.get_tracer("my.agent").start_as_current_span("work"):
        agl.emit_message("working")
    agl.emit_reward(0.5)


# -- tests ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("agent", [plain_otel_async, plain_otel_sync], ids=["async", "sync"])
async def test_a_plain_otel_tracers_spans_arrive_with_the_attempts_ids(client, kafka_bootstrap, kafka_topics, agent):
    tag = f"otel-{agent.__name__}"
    runner, (rollout_id,) = await run_agent(client, agent, [{"n": 7}], tag)
    attempt_id = attempt_of(runner, rollout_id)
    spans = await on_the_log(kafka_bootstrap, kafka_topics, SpanRecorded)
    names = {s.name for s in spans}
    assert names == ({"plan", "tool.0", "tool.1"} if agent is plain_otel_async else {"plan", "tool.0", "in.thread"})
    by_name = {s.name: s for s in spans}
    plan = by_name["plan"]
    for span in spans:
        assert (span.rollout_id, span.attempt_id) == (rollout_id, attempt_id)
        assert span.attributes["agentlightning.rollout_id"] == rollout_id
        assert span.attributes["agentlightning.attempt_id"] == attempt_id
        assert span.resource["agentlightning.attempt_id"] == attempt_id
        assert span.resource["service.name"] == "agl-runner"
        assert span.trace_id == plan.trace_id
        if span is not plan:
            assert span.parent_id == plan.span_id
    assert plan.parent_id is None and plan.attributes["task.n"] == 7
    assert plan.end_time is not None and plan.end_time >= by_name["tool.0"].end_time
    if agent is plain_otel_async:
        assert by_name["tool.1"].kind == "CLIENT"
        assert [(e.name, e.attributes) for e in plan.events] == [("thinking", {"step": 1})]
    # Numbered by the API in the order the spans ended: children before their parent.
    assert sorted(s.sequence_id for s in spans) == list(range(1, len(spans) + 1))
    assert max(spans, key=lambda s: s.sequence_id) is plan


async def test_two_concurrent_attempts_spans_never_mix(client, kafka_bootstrap, kafka_topics):
    # Both run at once (two slots) and interleave: each sleeps inside its spans.
    tasks = [{"n": i, "steps": 4, "sleep_s": 0.2} for i in range(2)]
    runner, ids = await run_agent(client, plain_otel_async, tasks, "otel-mix", slots=2)
    records = {r.rollout_id: r for r in runner.records}
    assert len({r.attempt_id for r in records.values()}) == 2
    spans = await on_the_log(kafka_bootstrap, kafka_topics, SpanRecorded)
    assert len(spans) == 2 * 5
    for rollout_id, task in zip(ids, tasks, strict=True):
        mine = [s for s in spans if s.rollout_id == rollout_id]
        (plan,) = [s for s in mine if s.name == "plan"]
        assert plan.attributes["task.n"] == task["n"]
        assert {s.attempt_id for s in mine} == {records[rollout_id].attempt_id}
        assert {s.attributes["agentlightning.attempt_id"] for s in mine} == {records[rollout_id].attempt_id}
        assert {s.trace_id for s in mine} == {plan.trace_id}
        assert sorted(s.name for s in mine) == ["plan", "tool.0", "tool.1", "tool.2", "tool.3"]
    first, second = (next(s for s in spans if s.name == "plan" and s.rollout_id == r) for r in ids)
    assert first.start_time < second.end_time and second.start_time < first.end_time, "they did not overlap"


class LosesFirstAnswers:
    """The SDK client, except that the first answer to each span batch, reward batch and batch of reports carrying
    spans or rewards is lost on the way back."""

    def __init__(self, client: Any) -> None:
        self._client, self.lost = client, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def record_spans(self, spans, *, idempotency_key=None):
        await self._client.record_spans(spans, idempotency_key=idempotency_key)
        if not self.lost[f"spans {idempotency_key}"]:
            self.lost[f"spans {idempotency_key}"] += 1
            raise ApiUnavailable("answer lost")
        return await self._client.record_spans(spans, idempotency_key=idempotency_key)

    async def assign_rewards(self, rewards, *, idempotency_key=None):
        await self._client.assign_rewards(rewards, idempotency_key=idempotency_key)
        if not self.lost[f"rewards {idempotency_key}"]:
            self.lost[f"rewards {idempotency_key}"] += 1
            raise ApiUnavailable("answer lost")
        return await self._client.assign_rewards(rewards, idempotency_key=idempotency_key)

    async def report_many(self, worker_id, reports):
        answers = await self._client.report_many(worker_id, reports)
        key = f"reports {b''.join(reports)!r}"
        if any(b'"spans"' in r or b'"rewards"' in r for r in reports) and not self.lost[key]:
            self.lost[key] += 1
            raise ApiUnavailable("answer lost")
        return answers


async def test_a_resend_after_a_lost_answer_does_not_duplicate_spans(client, kafka_bootstrap, kafka_topics):
    lossy = LosesFirstAnswers(client)
    runner, (rollout_id,) = await run_agent(lossy, rewarded_with_spans, [{"n": 1}], "otel-lost")
    # The spans and the reward ride on the finish: its batch's answer was lost, and the same batch was resent.
    assert list(lossy.lost.values()) == [1]
    spans = await on_the_log(kafka_bootstrap, kafka_topics, SpanRecorded)
    assert sorted(s.name for s in spans) == ["agentlightning.annotation", "agentlightning.message", "work"]
    assert len({s.event_id for s in spans}) == len({s.span_id for s in spans}) == 3
    assert sorted(s.sequence_id for s in spans) == [1, 2, 3]
    (reward,) = await on_the_log(kafka_bootstrap, kafka_topics, RewardAssigned)
    (annotation,) = [s for s in spans if s.name == "agentlightning.annotation"]
    assert (reward.value, reward.span_id, reward.attempt_id) == (
        0.5,
        annotation.span_id,
        attempt_of(runner, rollout_id),
    )


async def test_with_tracing_off_nothing_is_traced_and_the_reward_is_unlinked(client, kafka_bootstrap, kafka_topics):
    await run_agent(client, rewarded_with_spans, [{"n": 1}], "otel-off", tracing=False)
    assert await on_the_log(kafka_bootstrap, kafka_topics, SpanRecorded) == []
    (reward,) = await on_the_log(kafka_bootstrap, kafka_topics, RewardAssigned)
    assert (reward.value, reward.span_id, reward.response_id) == (0.5, None, None)


async def test_the_llm_client_records_its_call_and_the_math_agent_links_its_reward(
    client, kafka_bootstrap, kafka_topics, llm_endpoint, llm_model
):
    published = await client.publish_resources({"llm": LLMResource(endpoint=llm_endpoint, model=llm_model)})
    task = {"question": "What is 2 + 3?", "answer": 5}
    runner, (rollout_id,) = await run_agent(client, math_agent, [task], "otel-llm", published.resources_id)
    spans = {s.name: s for s in await on_the_log(kafka_bootstrap, kafka_topics, SpanRecorded)}
    assert sorted(spans) == ["agentlightning.annotation", "openai.chat.completion"]
    span, annotation = spans["openai.chat.completion"], spans["agentlightning.annotation"]
    a = span.attributes
    assert (span.name, span.kind, span.status.status_code) == ("openai.chat.completion", "CLIENT", "UNSET")
    assert (a["gen_ai.system"], a["gen_ai.operation.name"], a["gen_ai.request.model"]) == ("openai", "chat", llm_model)
    assert (a["gen_ai.request.temperature"], a["gen_ai.request.max_tokens"]) == (0, 16)
    # The system line, the worked example's question and answer, then the task's question.
    assert a["gen_ai.prompt.3.role"] == "user" and a["gen_ai.prompt.3.content"] == task["question"]
    assert a["gen_ai.prompt.2.role"] == "assistant" and "gen_ai.prompt.4.role" not in a
    assert a["gen_ai.completion.0.role"] == "assistant" and isinstance(a["gen_ai.completion.0.content"], str)
    assert a["gen_ai.response.finish_reasons"] == [a["gen_ai.completion.0.finish_reason"]]
    prompt_ids, response_ids = a["prompt_token_ids"], a["response_token_ids"]
    assert isinstance(prompt_ids, list) and len(prompt_ids) > 5 and all(isinstance(i, int) for i in prompt_ids)
    assert isinstance(response_ids, list) and len(response_ids) == a["gen_ai.usage.output_tokens"] >= 1
    assert isinstance(a["gen_ai.response.id"], str) and a["agentlightning.attempt_id"] == attempt_of(runner, rollout_id)
    (reward,) = await on_the_log(kafka_bootstrap, kafka_topics, RewardAssigned)
    assert reward.value in (0.0, 1.0) and reward.value == runner.records[0].rewards[0]
    # Linked to the call it rewards: the event by span and response id, the annotation span by span id.
    assert (reward.span_id, reward.response_id) == (span.span_id, a["gen_ai.response.id"])
    assert annotation.parent_id is None and annotation.attributes == {
        "agentlightning.reward.0.name": "primary",
        "agentlightning.reward.0.value": reward.value,
        "agentlightning.link.0.key_match": "span_id",
        "agentlightning.link.0.value_match": span.span_id,
        "agentlightning.rollout_id": rollout_id,
        "agentlightning.attempt_id": attempt_of(runner, rollout_id),
    }


@agl.rollout
def chatty(task):
    """Many spans, or a few large ones: more than one request's worth either way."""
    tracer = trace.get_tracer("my.agent")
    for i in range(task["spans"]):
        with tracer.start_as_current_span(f"s{i}", attributes={"blob": "x" * task.get("blob", 0)}):
            pass


@pytest.mark.parametrize(("spans", "blob"), [(1100, 0), (16, 600_000)], ids=["many", "large"])
async def test_an_attempts_spans_are_posted_in_batches_under_the_count_and_size_limits(
    client, kafka_bootstrap, kafka_topics, spans, blob
):
    # 1100 spans are three batches of at most 500; 16 spans of 600 kB (9.6 MB, over the API's 8 MiB body
    # limit) are cut by size. Every span lands once, numbered in the order it ended.
    await run_agent(client, chatty, [{"spans": spans, "blob": blob}], f"otel-{spans}")
    recorded = await on_the_log(kafka_bootstrap, kafka_topics, SpanRecorded)
    assert sorted(s.sequence_id for s in recorded) == list(range(1, spans + 1))
    assert [s.name for s in sorted(recorded, key=lambda s: s.sequence_id)] == [f"s{i}" for i in range(spans)]
    assert {len(s.attributes["blob"]) for s in recorded} == {blob}


def test_batches_keep_the_order_and_cut_by_count_and_by_size():
    now = datetime.now(UTC)
    spans = [
        SpanIn(rollout_id="r", attempt_id="a", trace_id="1" * 32, span_id=f"{i:016x}", name=f"s{i}",
               start_time=now, attributes={"blob": "x" * size})
        for i, size in enumerate([10, 10, 10, 5000, 10, 9000, 10])
    ]  # fmt: skip
    sizes = [len(s.model_dump_json()) for s in spans]
    cut = batches(spans, max_count=2, max_bytes=6000)
    assert [s for batch in cut for s in batch] == spans
    # Cut by count after s1 and s3, by size before s5 (9 kB: alone, though over the size) and before s6.
    assert [[s.name for s in batch] for batch in cut] == [["s0", "s1"], ["s2", "s3"], ["s4"], ["s5"], ["s6"]]
    assert all(sum(sizes[int(s.name[1:])] for s in batch) <= 6000 for batch in cut if len(batch) > 1)
    assert batches(spans, max_count=2, max_bytes=6000) == cut  # the same spans, the same batches (and keys)
