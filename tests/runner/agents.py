"""Agents the runner tests run (importable by module path, for `agl runner --agent tests.runner.agents:...`)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import agl


@agl.rollout
async def noop(task):
    """Does nothing: the attempt succeeds with no reward and no spans."""


@agl.rollout
def always_fails(task):
    raise ValueError(f"boom on {task}")


@agl.rollout
def fails_first_attempt(task, resources, rollout):
    if rollout.sequence_id == 1:
        raise RuntimeError("the first attempt fails")
    agl.emit_reward(0.5, name="second_try")
    return 1.0


@agl.rollout
def slow(task):
    """Sleeps (in the runner's thread) for ``task["sleep_s"]`` seconds, then rewards 1."""
    time.sleep(float(task.get("sleep_s", 2.0)))
    return 1.0


class Waiter(agl.LitAgent[dict[str, Any]]):
    """Runs until cancelled; tells the test when it started and when it was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def rollout(self, task, resources, rollout):
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@agl.rollout
def traced(task):
    """Emits a reward and returns two spans."""
    agl.emit_reward(0.75)
    now = datetime.now(UTC).isoformat()
    return [{"name": "step", "start_time": now, "end_time": now}, {"name": "llm", "start_time": now}]


class Hooked(agl.LitAgent[dict[str, Any]]):
    """A mode-aware agent that records its hooks and the resources it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_rollout_start(self, task, runner, rollout):
        self.calls.append(("start", rollout.rollout_id, runner.worker_id))

    def training_rollout(self, task, resources, rollout):
        self.calls.append(("train", rollout.rollout_id, dict(resources)))
        return 0.5

    async def validation_rollout(self, task, resources, rollout):
        self.calls.append(("val", rollout.rollout_id, dict(resources)))
        return 0.25

    def on_rollout_end(self, task, rollout, result):
        self.calls.append(("end", rollout.rollout_id, result))
