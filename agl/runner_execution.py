"""One attempt's run of the agent, for :class:`agl.runner.Runner`: the knowledge its rollout names (retrieved
once and recorded before the agent sees it), its resources, the agent traced per attempt (``agl.tracer``), and
what it produced as an outcome and rewards, or its failure with what it traced.

An ``async`` agent runs as a task of the runner's loop, which a cancel from the API stops; a sync agent runs on
one of the runner's threads (one per slot) in a copy of the attempt's context, so ``emit_reward()`` finds the
rollout's scope there too.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agl import memory
from agl.agent import Outcome, Rollout, attempt_scope, interpret
from agl.runner_delivery import RolloutResources, deliver
from agl.runner_parts import _Active, _error_info, _Failure
from agl.tracer import AttemptTrace, attempt_tracing
from knowledge.context import retrieve_context
from producers.models import RewardIn

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping

    from agl.runner import Runner


class AgentExecution:
    """Runs ``runner``'s agent on its attempts. ``open()`` before the first, ``close()`` after the last."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._resources = RolloutResources(runner.client, runner.options.resources_wait_s)
        self._executor: ThreadPoolExecutor | None = None

    @property
    def opened(self) -> bool:
        return self._executor is not None

    def open(self) -> None:
        """The threads sync agents run on, one per slot (started as they are needed)."""
        self._executor = ThreadPoolExecutor(max_workers=self.runner.options.slots, thread_name_prefix="agl-agent")

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, active: _Active, rollout: Rollout) -> tuple[Outcome, list[RewardIn]] | _Failure | None:
        """Run the agent: its outcome and rewards, its failure, or None when the API cancelled it."""
        runner = self.runner
        ids = {"rollout_id": rollout.rollout_id, "attempt_id": rollout.attempt_id}
        trace: AttemptTrace | None = None
        with attempt_scope(rollout) as scope, memory.bind(memory.Memory(runner.client, runner.memory_agent_id)):
            try:
                # The knowledge the rollout names, retrieved once and recorded before the agent sees it.
                context = await deliver("context", lambda: retrieve_context(runner.client, active.claim))
                if context is not None:
                    scope.rollout = rollout = replace(rollout, context=context)
                resources = await self._resources.get(rollout.resources_id)
                # Only the agent is traced: the runner's own calls (an in-process API's spans) are not the agent's.
                with attempt_tracing(**ids, enabled=runner.options.tracing) as trace:
                    runner.agent.on_rollout_start(rollout.input, runner, rollout)
                    entry = runner.agent.entry(rollout.mode)
                    active.agent_task = self._launch(entry, rollout, resources)
                    result = await active.agent_task
                    runner.agent.on_rollout_end(rollout.input, rollout, result)
                outcome = interpret(result, rollout)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if active.cancelled_by_api and (current is None or current.cancelling() == 0):
                    return None
                raise
            except Exception as e:  # noqa: BLE001 - whatever the agent raises fails its attempt, with its story
                return _Failure(_error_info(e), trace.drain() if trace else [])
        if trace is not None:  # traced spans first, in the order they ended; then the spans the agent returned
            outcome = replace(outcome, spans=(*trace.drain(), *outcome.spans))
        rewards = [
            RewardIn(**ids, value=r.value, name=r.name, dimensions=dict(r.dimensions), span_id=r.span_id,
                     response_id=r.response_id)
            for r in scope.rewards
        ]  # fmt: skip
        if outcome.reward is not None:
            rewards.append(RewardIn(**ids, value=outcome.reward))
        return outcome, rewards

    def _launch(self, entry: Callable[..., Any], rollout: Rollout, resources: Mapping[str, Any]) -> asyncio.Future[Any]:
        if inspect.iscoroutinefunction(entry):
            coroutine: Coroutine[Any, Any, Any] = entry(rollout.input, resources, rollout)
            return asyncio.ensure_future(coroutine)
        # The thread runs in a copy of this context, so emit_reward() finds the rollout's scope there too.
        call = functools.partial(contextvars.copy_context().run, entry, rollout.input, resources, rollout)
        return asyncio.get_running_loop().run_in_executor(self._executor, call)
