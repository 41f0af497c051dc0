"""The emitters' encodings (Agent Lightning v0.3's), on the real OpenTelemetry SDK; and a failed attempt's trace
reported through a real runner, API and Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace

import agl
from agl.agent import AgentError, AttemptScope, EmittedReward, Rollout, attempt_scope
from agl.llm import ChatResult
from agl.runner import Runner, RunnerOptions
from agl.tracer import AttemptTrace, attempt_tracing
from producers.models import SpanIn
from schemas import SpanRecorded
from tests.runner.test_tracer import on_the_log

ROLLOUT = Rollout(rollout_id="ro-emit", attempt_id="at-emit", sequence_id=1, input={})
IDS = {"agentlightning.rollout_id": "ro-emit", "agentlightning.attempt_id": "at-emit"}


class Traced:
    """What one traced attempt recorded: its spans (drained once the block ends) and its rewards."""

    scope: AttemptScope
    trace: AttemptTrace | None
    spans: list[SpanIn]

    def named(self, name: str) -> SpanIn:
        (span,) = [s for s in self.spans if s.name == name]
        return span


@contextlib.contextmanager
def traced(enabled: bool = True) -> Iterator[Traced]:
    """A rollout's attempt as the runner sets it up (its scope, its tracing), without the runner."""
    record = Traced()
    with attempt_scope(ROLLOUT) as record.scope, attempt_tracing("ro-emit", "at-emit", enabled=enabled) as t:
        record.trace = t
        yield record
    record.spans = t.drain() if t is not None else []


def own(span: SpanIn) -> dict[str, Any]:
    """A span's attributes without the attempt's ids the tracer adds to every span."""
    assert {k: span.attributes[k] for k in IDS} == IDS
    return {k: v for k, v in span.attributes.items() if k not in IDS}


# -- emit_reward ----------------------------------------------------------------------------------------------
def test_a_scalar_reward_is_an_annotation_span_and_its_event_mirrors_it():
    with traced() as t, trace.get_tracer("test").start_as_current_span("step") as step:
        span_id = agl.emit_reward(0.75)
    annotation = t.named("agentlightning.annotation")
    assert span_id == annotation.span_id
    assert own(annotation) == {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 0.75}
    assert annotation.status.status_code == "OK" and annotation.start_time == annotation.end_time
    assert annotation.parent_id == format(step.get_span_context().span_id, "016x")
    assert t.scope.rewards == [EmittedReward(0.75, "reward", {}, span_id=annotation.span_id)]


def test_a_reward_with_a_name_and_dimensions_keeps_todays_signature():
    with traced() as t:
        agl.emit_reward(1, name="format", dimensions={"len": 3.0, "style": 0.5})
    assert own(t.named("agentlightning.annotation")) == {
        "agentlightning.reward.0.name": "format",
        "agentlightning.reward.0.value": 1.0,
        "agentlightning.reward.1.name": "len",
        "agentlightning.reward.1.value": 3.0,
        "agentlightning.reward.2.name": "style",
        "agentlightning.reward.2.value": 0.5,
    }
    (event,) = t.scope.rewards
    assert (event.value, event.name, dict(event.dimensions)) == (1.0, "format", {"len": 3.0, "style": 0.5})


def test_a_multi_dimensional_reward_puts_its_primary_dimension_first():
    with traced() as t:
        agl.emit_reward({"short": 0.5, "correct": 1.0}, primary_key="correct")
        agl.emit_reward({"a": 0.1, "b": 0.2})  # the first key is the primary one
        agl.emit_reward({"a": 0.1, "b": 0.2}, name="b")  # a name that is a key picks it
        with pytest.raises(AgentError, match="primary_key"):
            agl.emit_reward({"a": 0.1}, primary_key="z")
        with pytest.raises(AgentError, match="finite"):
            agl.emit_reward({"a": float("inf")})
    first, second, third = sorted((s for s in t.spans), key=lambda s: s.start_time)
    assert own(first) == {
        "agentlightning.reward.0.name": "correct",
        "agentlightning.reward.0.value": 1.0,
        "agentlightning.reward.1.name": "short",
        "agentlightning.reward.1.value": 0.5,
    }
    assert [own(s)["agentlightning.reward.0.name"] for s in (second, third)] == ["a", "b"]
    assert [(r.value, r.name, dict(r.dimensions)) for r in t.scope.rewards] == [
        (1.0, "correct", {"short": 0.5}),
        (0.1, "a", {"b": 0.2}),
        (0.2, "b", {"a": 0.1}),
    ]
    assert len(t.spans) == 3  # the refused rewards left no span and no event


def test_a_linked_reward_names_the_call_it_rewards():
    reply = ChatResult(None, "stop", None, "chatcmpl-9", "m", span_id="00000000000000aa")
    with traced() as t:
        with trace.get_tracer("test").start_as_current_span("call") as call:
            pass
        call_id = format(call.get_span_context().span_id, "016x")
        agl.emit_reward(1.0, link=call, tags=["judge", "exact"])
        agl.emit_reward(0.5, link="00000000000000ab")
        agl.emit_reward(0.25, link=reply)
        agl.emit_reward(0.125, response_id="chatcmpl-7")
        with pytest.raises(AgentError, match="not a span id"):
            agl.emit_reward(1.0, link="chatcmpl-7")
        with pytest.raises(AgentError, match="not int"):
            agl.emit_reward(1.0, link=7)
    annotations = sorted((s for s in t.spans if s.name == "agentlightning.annotation"), key=lambda s: s.start_time)
    links = [{k: v for k, v in own(s).items() if "link" in k} for s in annotations]
    assert links == [
        {"agentlightning.link.0.key_match": "span_id", "agentlightning.link.0.value_match": call_id},
        {"agentlightning.link.0.key_match": "span_id", "agentlightning.link.0.value_match": "00000000000000ab"},
        {"agentlightning.link.0.key_match": "span_id", "agentlightning.link.0.value_match": "00000000000000aa"},
        {"agentlightning.link.0.key_match": "gen_ai.response.id", "agentlightning.link.0.value_match": "chatcmpl-7"},
    ]
    assert own(annotations[0])["agentlightning.tag.0"] == "judge"
    assert own(annotations[0])["agentlightning.tag.1"] == "exact"
    # The events name the rewarded call (not the annotation span): they bind by link, not as mirrors.
    assert [(r.span_id, r.response_id) for r in t.scope.rewards] == [
        (call_id, None),
        ("00000000000000ab", None),
        ("00000000000000aa", "chatcmpl-9"),
        (None, "chatcmpl-7"),
    ]


def test_a_reward_is_a_finite_number_emitted_inside_a_rollout():
    with pytest.raises(AgentError, match="inside a rollout"):
        agl.emit_reward(1.0)
    with traced() as t:
        bad: Any
        for bad in (float("nan"), True, "1.0", None):
            with pytest.raises(AgentError, match="finite number"):
                agl.emit_reward(bad)
    assert t.spans == [] and t.scope.rewards == []


# -- messages, objects, exceptions ----------------------------------------------------------------------------
def lookup(table: dict[str, int], key: str) -> int:
    return table[key]


def test_message_object_and_exception_spans_are_encoded_as_agent_lightning_encodes_them():
    try:
        lookup({}, "missing")
    except KeyError as e:
        caught = e
    with traced() as t:
        message_id = agl.emit_message("hello", attributes={"level": "info"})
        agl.emit_object("text")
        agl.emit_object(3)
        agl.emit_object(2.5)
        agl.emit_object(True)
        agl.emit_object(b"\x00\xff")
        agl.emit_object({"a": [1, 2], "b": None})
        agl.emit_exception(caught)
        with pytest.raises(TypeError):
            agl.emit_message(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            agl.emit_object(object())
        with pytest.raises(TypeError):
            agl.emit_exception("not an exception")  # type: ignore[arg-type]
    message = t.named("agentlightning.message")
    assert message.span_id == message_id and message.status.status_code == "UNSET"
    assert own(message) == {"agentlightning.message.body": "hello", "level": "info"}
    objects = [own(s) for s in sorted(t.spans, key=lambda s: s.start_time) if s.name == "agentlightning.object"]
    assert objects == [
        {"agentlightning.object.type": "str", "agentlightning.object.literal": "text"},
        {"agentlightning.object.type": "int", "agentlightning.object.literal": "3"},
        {"agentlightning.object.type": "float", "agentlightning.object.literal": "2.5"},
        {"agentlightning.object.type": "bool", "agentlightning.object.literal": "True"},
        {"agentlightning.object.type": "bytes", "agentlightning.object.literal": "AP8="},
        {"agentlightning.object.type": "dict", "agentlightning.object.json": '{"a": [1, 2], "b": null}'},
    ]
    exception = t.named("agentlightning.exception")
    attributes = own(exception)
    assert exception.status.status_code == "OK"  # the span itself did not fail
    assert (attributes["exception.type"], attributes["exception.message"]) == ("KeyError", "'missing'")
    assert attributes["exception.escaped"] is True
    assert "return table[key]" in attributes["exception.stacktrace"]
    assert len(t.spans) == 8


# -- operation --------------------------------------------------------------------------------------------------
@agl.operation
def add(a: int, b: int = 10, *rest: int, **options: Any) -> dict[str, Any]:
    with trace.get_tracer("test").start_as_current_span("inside"):
        return {"sum": a + b + sum(rest), "options": options}


@agl.operation(name="divide", category="math")
async def divide(a: float, b: float) -> float:
    await asyncio.sleep(0)
    return a / b


@agl.operation
def fails(x: Any) -> None:
    raise ValueError(f"bad {x}")


def test_the_operation_decorator_records_name_inputs_and_output_of_a_sync_function():
    with traced() as t:
        assert add(1, 2, 3, 4, mode={"fast": True}) == {"sum": 10, "options": {"mode": {"fast": True}}}
    operation, inside = t.named("agentlightning.operation"), t.named("inside")
    assert inside.parent_id == operation.span_id  # the operation is the current span while it runs
    assert own(operation) == {
        "agentlightning.operation.name": "add",
        "agentlightning.operation.input.a": 1,
        "agentlightning.operation.input.b": 2,
        "agentlightning.operation.input.rest.0": 3,
        "agentlightning.operation.input.rest.1": 4,
        "agentlightning.operation.input.options.mode.fast": True,
        "agentlightning.operation.output.sum": 10,
        "agentlightning.operation.output.options.mode.fast": True,
    }
    assert operation.status.status_code == "UNSET"


async def test_the_operation_decorator_on_an_async_function_records_an_exception_and_raises_it():
    with traced() as t:
        assert await divide(6, 3) == 2.0
        with pytest.raises(ZeroDivisionError):
            await divide(1, 0)
        with pytest.raises(ValueError, match="bad 7"):
            fails(7)
    divides = [s for s in t.spans if own(s)["agentlightning.operation.name"] == "divide"]
    (ok,) = [s for s in divides if s.status.status_code == "UNSET"]
    (failed,) = [s for s in divides if s.status.status_code == "ERROR"]
    assert own(ok) == {
        "agentlightning.operation.name": "divide",
        "category": "math",
        "agentlightning.operation.input.a": 6,
        "agentlightning.operation.input.b": 3,
        "agentlightning.operation.output": 2.0,
    }
    assert (failed.status.status_code, failed.status.description) == ("ERROR", "division by zero")
    assert "agentlightning.operation.output" not in failed.attributes
    (event,) = failed.events  # recorded once
    assert event.name == "exception" and event.attributes["exception.type"] == "ZeroDivisionError"
    (raised,) = [s for s in t.spans if own(s)["agentlightning.operation.name"] == "fails"]
    assert raised.status.status_code == "ERROR" and raised.events[0].attributes["exception.message"] == "bad 7"


def test_operation_as_a_context_manager_records_what_it_is_told():
    with traced() as t:
        with agl.operation(name="lookup", user=3) as op:
            op.set_input("q", [1, 2], limit=5)
            op.set_output(["a", "b"])
        with pytest.raises(RuntimeError), agl.operation():
            raise RuntimeError("stop")
    first, second = sorted(t.spans, key=lambda s: s.start_time)
    assert op.span_id == first.span_id
    assert own(first) == {
        "agentlightning.operation.name": "lookup",
        "user": 3,
        "agentlightning.operation.input.args.0": "q",
        "agentlightning.operation.input.args.1": [1, 2],
        "agentlightning.operation.input.limit": 5,
        "agentlightning.operation.output": ["a", "b"],
    }
    assert own(second) == {} and second.status.status_code == "ERROR"


# -- no-op ------------------------------------------------------------------------------------------------------
async def test_without_tracing_the_emitters_do_nothing_but_the_reward_event():
    for setting in ("no runner", "tracing off"):
        with contextlib.ExitStack() as stack:
            t = stack.enter_context(traced(enabled=False)) if setting == "tracing off" else None
            assert agl.emit_message("hi") is None and agl.emit_object({"a": 1}) is None
            assert agl.emit_exception(ValueError("x")) is None
            assert add(1, 2) == {"sum": 3, "options": {}} and await divide(1, 4) == 0.25
            with pytest.raises(ValueError, match="bad 1"):
                fails(1)
            with agl.operation(name="block") as op:
                op.set_input(1)
                op.set_output(2)
            assert op.span_id is None
            assert not agl.tracer.get_tracer().start_span("x").is_recording()
            if t is not None:
                assert agl.emit_reward(0.5) is None
                agl.emit_reward(1.0, link="00000000000000ab", response_id="r-1")
        if t is not None:
            assert t.spans == [] and t.scope.rewards == [
                EmittedReward(0.5, "reward", {}),
                EmittedReward(1.0, "reward", {}, span_id="00000000000000ab", response_id="r-1"),
            ]


# -- through the runner -----------------------------------------------------------------------------------------
@agl.rollout
def traced_then_fails(task):
    try:
        json.loads("{")
    except ValueError as e:
        agl.emit_exception(e)
    fails(task["x"])


async def test_a_failed_attempt_reports_what_it_traced_before_its_failure(client, kafka_bootstrap, kafka_topics):
    await client.enqueue_rollout({"x": 3}, rollout_id="ro-emit-fails", required_capabilities=["emit-fails"])
    runner = Runner(traced_then_fails, client, RunnerOptions(capabilities=("emit-fails",), max_rollouts=1))
    assert await asyncio.wait_for(runner.run(), 120) == {"failed": 1}
    (record,) = runner.records
    assert record.error is not None and record.error.message == "bad 3"
    spans: list[SpanRecorded] = await on_the_log(kafka_bootstrap, kafka_topics, SpanRecorded)
    assert sorted(s.name for s in spans) == ["agentlightning.exception", "agentlightning.operation"]
    assert {(s.rollout_id, s.attempt_id) for s in spans} == {("ro-emit-fails", record.attempt_id)}
    (operation,) = [s for s in spans if s.name == "agentlightning.operation"]
    assert operation.status.status_code == "ERROR" and operation.attributes["agentlightning.operation.input.x"] == 3
