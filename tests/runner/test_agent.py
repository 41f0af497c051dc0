"""The agent API without any service: the decorator, mode dispatch, return conventions and emit_reward."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

import agl
from agl.agent import AgentError, LitAgent, Rollout, attempt_scope, interpret
from agl.runner import Backoff
from producers.models import SpanIn
from schemas import LLMResource

ROLLOUT = Rollout(rollout_id="ro-1", attempt_id="at-1", sequence_id=1, input={"q": 1}, mode="train")
RESOURCES = {"llm": LLMResource(endpoint="http://llm", model="m")}


async def call(entry: Any, task: Any = "task", resources: Any = RESOURCES, rollout: Rollout = ROLLOUT) -> Any:
    """Call an entry as the runner does: await a coroutine function, call a plain one."""
    if inspect.iscoroutinefunction(entry):
        return await entry(task, resources, rollout)
    return entry(task, resources, rollout)


def task_only(task):
    return ("task", task)


def task_resources(task, resources):
    return ("resources", task, resources)


def task_resources_rollout(task, resources, rollout):
    return ("all", task, resources, rollout)


def task_rollout_by_name(task, rollout):
    return ("rollout", task, rollout)


def keyword_only(task, *, rollout, resources):
    return ("kw", task, resources, rollout)


def other_names(task, res, ro):
    return ("positional", task, res, ro)


async def async_task_only(task):
    await asyncio.sleep(0)
    return ("task", task)


async def async_task_resources_rollout(task, resources, rollout):
    await asyncio.sleep(0)
    return ("all", task, resources, rollout)


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (task_only, ("task", "task")),
        (task_resources, ("resources", "task", RESOURCES)),
        (task_resources_rollout, ("all", "task", RESOURCES, ROLLOUT)),
        (task_rollout_by_name, ("rollout", "task", ROLLOUT)),
        (keyword_only, ("kw", "task", RESOURCES, ROLLOUT)),
        (other_names, ("positional", "task", RESOURCES, ROLLOUT)),
        (async_task_only, ("task", "task")),
        (async_task_resources_rollout, ("all", "task", RESOURCES, ROLLOUT)),
    ],
)
async def test_the_decorator_calls_a_function_with_what_it_declares(func, expected):
    agent = agl.rollout(func)
    assert isinstance(agent, LitAgent)
    for mode in ("train", "val", "test", None):
        entry = agent.entry(mode)
        assert inspect.iscoroutinefunction(entry) == inspect.iscoroutinefunction(func)
        assert await call(entry) == expected
    assert agent.func is func


def test_a_decorated_function_stays_callable_as_itself():
    assert agl.rollout(task_resources)("t", {"r": 1}) == ("resources", "t", {"r": 1})


def test_a_function_the_runner_cannot_call_is_refused_at_decoration():
    def no_task():
        return 1.0

    def extra_required(task, resources, rollout, more):
        return 1.0

    def unknown_keyword(task, *, temperature):
        return 1.0

    for func in (no_task, extra_required, unknown_keyword):
        with pytest.raises(AgentError):
            agl.rollout(func)

    def defaulted(task, resources, rollout, more=3):
        return more

    assert agl.rollout(defaulted).entry(None)("t", {}, ROLLOUT) == 3


class ByMode(LitAgent[str]):
    def rollout(self, task, resources, rollout):
        return "rollout"

    async def training_rollout(self, task, resources, rollout):
        return "training"


class AsyncOnly(LitAgent[str]):
    async def rollout(self, task, resources, rollout):
        return f"async {rollout.mode}"


async def test_mode_picks_the_method_and_falls_back_to_rollout():
    agent = ByMode()
    assert await call(agent.entry("train")) == "training"
    assert inspect.iscoroutinefunction(agent.entry("train"))
    assert await call(agent.entry("val")) == "rollout"
    assert await call(agent.entry("test")) == "rollout"
    assert await call(agent.entry(None)) == "rollout"
    # An inherited mode method resolves to rollout itself, so an async rollout stays async in every mode.
    only = AsyncOnly()
    for mode in ("train", "val", None):
        assert inspect.iscoroutinefunction(only.entry(mode))
        assert await call(only.entry(mode)) == "async train"
    with pytest.raises(NotImplementedError):
        LitAgent().entry("train")("t", {}, ROLLOUT)


def test_a_number_is_the_reward():
    assert interpret(0.5, ROLLOUT).reward == 0.5
    assert interpret(1, ROLLOUT).reward == 1.0 and isinstance(interpret(1, ROLLOUT).reward, float)
    assert interpret(None, ROLLOUT).reward is None and interpret(None, ROLLOUT).spans == ()


@pytest.mark.parametrize("value", [True, float("nan"), float("inf"), "1.0", {"reward": 1}, object()])
def test_anything_else_is_an_agent_error(value):
    with pytest.raises(AgentError):
        interpret(value, ROLLOUT)


def test_a_list_of_spans_gets_the_attempts_ids_and_stable_span_ids():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    given = SpanIn(
        rollout_id="ro-other", attempt_id="at-other", trace_id="a" * 32, span_id="b" * 16, name="given",
        start_time=start,
    )  # fmt: skip
    outcome = interpret([{"name": "llm", "start_time": start.isoformat(), "attributes": {"k": 1}}, given], ROLLOUT)
    first, second = outcome.spans
    assert outcome.reward is None
    assert (first.rollout_id, first.attempt_id, first.name, first.attributes) == ("ro-1", "at-1", "llm", {"k": 1})
    assert len(first.trace_id) == 32 and len(first.span_id) == 16
    assert int(first.trace_id, 16) and int(first.span_id, 16)  # hex, and valid (not all zeros) in OpenTelemetry
    drawn = interpret([{"name": "x", "start_time": start.isoformat()}] * 50, ROLLOUT).spans
    assert len({s.trace_id for s in drawn}) == len({s.span_id for s in drawn}) == 50
    assert (second.rollout_id, second.attempt_id, second.span_id) == ("ro-1", "at-1", "b" * 16)
    with pytest.raises(AgentError, match="not valid"):
        interpret([{"name": "no start time"}], ROLLOUT)
    with pytest.raises(AgentError):
        interpret(["not a span"], ROLLOUT)


def test_emit_reward_records_into_the_current_rollout_also_from_a_thread():
    with pytest.raises(AgentError, match="inside a rollout"):
        agl.emit_reward(1.0)
    with attempt_scope(ROLLOUT) as scope:
        agl.emit_reward(0.25, name="format", dimensions={"len": 3.0})
        assert agl.current_rollout() is ROLLOUT
        # A sync agent runs in a thread with a copy of the runner's context: the scope is the same object.
        worker = threading.Thread(target=contextvars.copy_context().run, args=(agl.emit_reward, 1))
        worker.start()
        worker.join()
        with pytest.raises(AgentError):
            agl.emit_reward(float("nan"))
    assert [(r.value, r.name, dict(r.dimensions)) for r in scope.rewards] == [
        (0.25, "format", {"len": 3.0}),
        (1.0, "reward", {}),
    ]
    with pytest.raises(AgentError):
        agl.current_rollout()


def test_backoff_grows_with_jitter_up_to_its_cap():
    backoff = Backoff(base_s=0.1, cap_s=1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [min(1.0, 0.1 * 2**i) for i in range(8)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(Backoff(0.1, 1.0).next_delay(), 9) for _ in range(20)}) > 1  # jittered, not in step
