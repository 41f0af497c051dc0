"""``agl.dev(agent, tasks)``: run an agent over a few tasks against a running stack, from a script or notebook.

It enqueues one rollout per task, runs an in-process :class:`~agl.runner.Runner` (the same code as
``agl runner``) until every rollout is terminal or ``timeout_s`` passes, and returns the rollouts with their
status and reward. The rollouts require a capability only this call's runner offers, so no other runner takes
them; they also get a high priority, so this runner takes them before anything else queued. (A runner may claim
any rollout without required capabilities: run the dev loop on a stack with no other work queued.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agl.agent import LitAgent, rollout
from agl.runner import AttemptRecord, Runner, RunnerOptions

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from agl.config import Settings
    from producers.client import AsyncClient, RolloutAnswer
    from schemas import ErrorInfo, RolloutConfig

log = logging.getLogger("agl.dev")

#: Dev rollouts go first: the stack is usually a developer's own, and these are what they wait for.
DEV_PRIORITY = 1_000
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class DevRollout:
    """One task's rollout as it ended (or stood at the timeout)."""

    rollout_id: str
    input: Any
    status: str
    reward: float | None
    rewards: tuple[float, ...]
    attempts: int
    error: ErrorInfo | None
    detail: Mapping[str, Any]


def api_url(settings: Settings) -> str:
    """The API of the stack running on the data directory, else ``AGL_API_HOST``:``AGL_API_PORT``."""
    from agl.stack.state import StackLock, read_state

    state = read_state(settings.data_dir) if StackLock(settings.data_dir).held_by_someone() else None
    if state is not None and state.api_url:
        return state.api_url
    return f"http://{settings.api_host}:{settings.api_port}"


def dev(
    agent: LitAgent[Any] | Callable[..., Any],
    tasks: Iterable[Any],
    *,
    api: str | None = None,
    slots: int = 2,
    timeout_s: float = 300.0,
    mode: str = "train",
    resources_id: str | None = None,
    config: RolloutConfig | None = None,
) -> list[DevRollout]:
    """Run ``agent`` (a LitAgent or a rollout function) over ``tasks``; the rollouts in task order.

    Blocking. Inside a running event loop (a notebook), it runs on a thread of its own; ``await dev_async(...)``
    runs on the caller's loop instead.
    """
    kwargs: dict[str, Any] = {
        "api": api, "slots": slots, "timeout_s": timeout_s, "mode": mode,
        "resources_id": resources_id, "config": config,
    }  # fmt: skip
    task_list = list(tasks)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(dev_async(agent, task_list, **kwargs))
    result: list[list[DevRollout]] = []
    failure: list[BaseException] = []

    def in_thread() -> None:
        try:
            result.append(asyncio.run(dev_async(agent, task_list, **kwargs)))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread below
            failure.append(e)

    thread = threading.Thread(target=in_thread, name="agl-dev")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


async def dev_async(
    agent: LitAgent[Any] | Callable[..., Any],
    tasks: Sequence[Any],
    *,
    api: str | None = None,
    client: AsyncClient | None = None,
    slots: int = 2,
    timeout_s: float = 300.0,
    mode: str = "train",
    resources_id: str | None = None,
    config: RolloutConfig | None = None,
    heartbeat_s: float = 2.0,
) -> list[DevRollout]:
    """:func:`dev` on the caller's event loop; ``client`` (an AsyncClient) replaces ``api`` when given."""
    from agl.config import Settings
    from producers.client import AsyncClient

    lit: LitAgent[Any] = agent if isinstance(agent, LitAgent) else rollout(agent)
    own = client is None
    client = client or AsyncClient(api or api_url(Settings()))
    session = uuid.uuid4().hex[:10]
    capability = f"agl-dev-{session}"
    ids = [f"dev-{session}-{i:05d}" for i in range(len(tasks))]
    try:
        if tasks:
            common: dict[str, Any] = {"mode": mode, "resources_id": resources_id, "priority": DEV_PRIORITY}
            common |= {"required_capabilities": [capability], **({"config": config} if config else {})}
            rollouts = [{"rollout_id": rid, "input": task, **common} for rid, task in zip(ids, tasks, strict=True)]
            await client.enqueue_rollouts(rollouts, idempotency_key=f"agl-dev-{session}")
        options = RunnerOptions(
            slots=slots, capabilities=(capability,), worker_id=capability, heartbeat_s=heartbeat_s, poll_wait_ms=1000
        )
        runner = Runner(lit, client, options)
        running = asyncio.create_task(runner.run())
        try:
            answers = await _until_terminal(client, ids, timeout_s, running)
        finally:
            runner.stop()
            await running
        return [_dev_rollout(rid, task, answers.get(rid), runner.records) for rid, task in zip(ids, tasks, strict=True)]
    finally:
        if own:
            await client.aclose()


async def _until_terminal(
    client: AsyncClient, ids: Sequence[str], timeout_s: float, running: asyncio.Task[Any]
) -> dict[str, RolloutAnswer]:
    """The rollouts' answers once all are terminal (or as they stand at the deadline)."""
    deadline = time.monotonic() + timeout_s
    done: dict[str, RolloutAnswer] = {}
    while len(done) < len(ids) and not running.done():
        left = deadline - time.monotonic()
        if left <= 0:
            log.warning(
                "agl.dev: %d of %d rollouts not terminal after %.0f s", len(ids) - len(done), len(ids), timeout_s
            )
            break
        waiting = [rid for rid in ids if rid not in done]
        for answer in await client.wait_rollouts(waiting, min(left, 5.0)):
            if answer.status in TERMINAL:
                done[answer.rollout_id] = answer
    if running.done():
        running.result()  # the runner's own failure (the API refused it) is the caller's to see
    for rid in ids:
        if rid not in done and (found := await client.get_rollout(rid)) is not None:
            done[rid] = found
    return done


def _dev_rollout(
    rollout_id: str, task: Any, answer: RolloutAnswer | None, records: Iterable[AttemptRecord]
) -> DevRollout:
    mine = [r for r in records if r.rollout_id == rollout_id]
    last = mine[-1] if mine else None
    detail = answer.model_dump() if answer is not None else {}
    rewards = last.rewards if last is not None else ()
    return DevRollout(
        rollout_id=rollout_id,
        input=task,
        status=answer.status if answer is not None else "unknown",
        reward=rewards[-1] if rewards else None,
        rewards=rewards,
        attempts=int(detail.get("attempt_count") or len(mine)),
        error=last.error if last is not None else None,
        detail=detail,
    )


__all__ = ["DevRollout", "api_url", "dev", "dev_async"]
