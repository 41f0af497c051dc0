"""The agent API: :class:`LitAgent`, the ``@agl.rollout`` decorator and what a rollout returns.

An agent runs one rollout's input (the *task*) with the rollout's resources and returns, as Agent Lightning
agents do, one of:

- a number: the reward of the attempt (posted as a ``reward.assigned`` with the attempt id);
- a list of spans (dicts shaped like ``SpanIn``, or ``SpanIn`` objects): recorded through ``POST /v1/spans``;
- ``None``: the agent emitted its rewards itself, with :func:`agl.emit_reward`.

An exception ends the attempt ``failed`` with the exception's type, message and traceback. The runner decides
sync versus async by looking at the method: coroutine functions run as tasks, plain functions in a thread.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

from agl.errors import LightningError

if TYPE_CHECKING:
    from producers.models import SpanIn
    from schemas import Resource

#: The type of a rollout's input (the task) an agent expects.
T = TypeVar("T")


class AgentError(LightningError):
    """An agent broke the agent API's contract (a bad return value, an unusable rollout function)."""


@dataclass(frozen=True)
class Rollout:
    """The rollout an agent runs: the claim the runner received for this attempt."""

    rollout_id: str
    attempt_id: str
    sequence_id: int
    input: Any
    mode: str | None = None
    resources_id: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: The knowledge the rollout names (``metadata["knowledge"]``), retrieved before the agent started and
    #: recorded as ``attempt.context_retrieved``: a ``knowledge.context.RetrievedContext``, or None.
    context: Any = None


class LitAgent(Generic[T]):
    """Base class of agents. Implement :meth:`rollout`, or :meth:`training_rollout` / :meth:`validation_rollout`.

    ``T`` is the type of the task (the rollout's input). Each method may be plain or ``async`` and returns (or
    its coroutine returns) a reward, a list of spans or None. ``mode`` picks the method: ``train`` runs
    ``training_rollout``, ``val`` and ``test`` run ``validation_rollout``; both fall back to ``rollout``.
    """

    def rollout(self, task: T, resources: Mapping[str, Resource], rollout: Rollout) -> Any:
        raise NotImplementedError(f"{type(self).__name__} implements neither rollout nor a mode's rollout method")

    def training_rollout(self, task: T, resources: Mapping[str, Resource], rollout: Rollout) -> Any:
        return self.rollout(task, resources, rollout)

    def validation_rollout(self, task: T, resources: Mapping[str, Resource], rollout: Rollout) -> Any:
        return self.rollout(task, resources, rollout)

    def on_rollout_start(self, task: T, runner: Any, rollout: Rollout) -> None:
        """Called before the rollout method, on the runner's event loop."""

    def on_rollout_end(self, task: T, rollout: Rollout, result: Any) -> None:
        """Called after the rollout method returned (not when it raised or was cancelled)."""

    def entry(self, mode: str | None) -> Callable[..., Any]:
        """The callable that runs a rollout of ``mode``, called as ``entry(task, resources, rollout)``.

        An overridden mode method wins over ``rollout``; a mode method left as inherited resolves to
        ``rollout`` itself, so that an ``async def rollout`` is seen as async (the inherited wrappers are sync).
        """
        name = {"train": "training_rollout", "val": "validation_rollout", "test": "validation_rollout"}.get(
            mode or "", "rollout"
        )
        if name != "rollout" and getattr(type(self), name) is getattr(LitAgent, name):
            name = "rollout"
        method: Callable[..., Any] = getattr(self, name)
        return method


class FunctionAgent(LitAgent[Any]):
    """A plain function as an agent (made by ``@agl.rollout``); called with the parameters it declares."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self._call = _adapter(func)
        self.__name__ = getattr(func, "__name__", type(self).__name__)
        self.__doc__ = func.__doc__

    def entry(self, mode: str | None) -> Callable[..., Any]:
        return self._call

    def rollout(self, task: Any, resources: Mapping[str, Resource], rollout: Rollout) -> Any:
        return self._call(task, resources, rollout)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


def agent_name(agent: LitAgent[Any]) -> str:
    """A name for the agent (its function's, or its class's), e.g. whose memories it reaches."""
    func = getattr(agent, "func", None)
    return str(getattr(func, "__name__", None) or type(agent).__name__)


def rollout(func: Callable[..., Any]) -> FunctionAgent:
    """Turn ``f(task)``, ``f(task, resources)`` or ``f(task, resources, rollout)`` (sync or async) into an agent.

    Parameters named ``resources`` or ``rollout`` get those whatever their position; otherwise the second
    positional parameter is the resources and the third the rollout.
    """
    return FunctionAgent(func)


_NAMED = ("resources", "rollout")


def _adapter(func: Callable[..., Any]) -> Callable[..., Any]:
    """A callable ``(task, resources, rollout)`` that calls ``func`` with what it declares, sync or async alike."""
    params = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if not params or params[0].kind is inspect.Parameter.KEYWORD_ONLY:
        raise AgentError(f"a rollout function takes the task as its first parameter: {func!r}")
    # Values no parameter asks for by name go, in order, to the next positional parameters.
    unclaimed = [name for name in _NAMED if name not in {p.name for p in params[1:]}]
    plan: list[tuple[str, str | None]] = []  # (what to pass, keyword name; None = positional only)
    for p in params[1:]:
        if p.name in _NAMED:
            what = p.name
        elif p.kind is not inspect.Parameter.KEYWORD_ONLY and unclaimed:
            what = unclaimed.pop(0)
        elif p.default is not inspect.Parameter.empty:
            continue
        else:
            raise AgentError(f"rollout function {func.__name__!r}: cannot fill parameter {p.name!r}")
        plan.append((what, None if p.kind is inspect.Parameter.POSITIONAL_ONLY else p.name))

    def pick(values: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        args = [values[what] for what, keyword in plan if keyword is None]
        kwargs = {keyword: values[what] for what, keyword in plan if keyword is not None}
        return args, kwargs

    if inspect.iscoroutinefunction(func):

        async def call_async(task: Any, resources: Mapping[str, Any], rollout: Rollout) -> Any:
            args, kwargs = pick({"resources": resources, "rollout": rollout})
            return await func(task, *args, **kwargs)

        return call_async

    def call(task: Any, resources: Mapping[str, Any], rollout: Rollout) -> Any:
        args, kwargs = pick({"resources": resources, "rollout": rollout})
        return func(task, *args, **kwargs)

    return call


# -- rewards emitted from inside a rollout ---------------------------------------------------------------------
@dataclass(frozen=True)
class EmittedReward:
    value: float
    name: str = "reward"
    dimensions: Mapping[str, float] = field(default_factory=dict)
    #: The span this reward is for: its annotation span (a mirror), or the LLM call it is linked to.
    span_id: str | None = None
    #: The LLM response (``gen_ai.response.id``) it is linked to.
    response_id: str | None = None


@dataclass
class AttemptScope:
    """What :func:`emit_reward` reaches from inside a rollout: the rollout and the rewards emitted so far.

    A sync agent runs in a thread that inherits the runner's context, so the scope is shared by reference;
    appending to a list is atomic, so emitting from several threads of one agent loses nothing.
    """

    rollout: Rollout
    rewards: list[EmittedReward] = field(default_factory=list)


_SCOPE: ContextVar[AttemptScope | None] = ContextVar("agl_attempt_scope", default=None)


@contextlib.contextmanager
def attempt_scope(rollout: Rollout) -> Iterator[AttemptScope]:
    """Make ``rollout`` the current one for :func:`emit_reward` and :func:`current_rollout` inside the block."""
    scope = AttemptScope(rollout)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def emit_reward(value: Any, **options: Any) -> str | None:
    """Record a reward for the current rollout's attempt: see :func:`agl.emitters.emit_reward`."""
    from agl.emitters import emit_reward as emit

    return emit(value, **options)


def current_rollout() -> Rollout:
    """The rollout being run (from inside an agent), e.g. to tag spans or LLM calls with its ids."""
    scope = _SCOPE.get()
    if scope is None:
        raise AgentError("current_rollout() is called from inside a rollout")
    return scope.rollout


# -- what a rollout returned ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What the runner reports for a rollout that returned: its reward (if a number) and its spans."""

    reward: float | None = None
    spans: tuple[SpanIn, ...] = ()


def interpret(result: Any, rollout: Rollout) -> Outcome:
    """The reward or spans of a rollout method's return value.

    Span dicts get the rollout's ids filled in, and a trace and span id when they lack one: chosen once here,
    so a report resent after a lost answer carries the same ids and is deduplicated downstream.

    Raises:
        AgentError: a value that is neither a finite number, a list of spans nor None.
    """
    if result is None:
        return Outcome()
    if isinstance(result, bool) or not isinstance(result, (int, float, list, tuple)):
        raise AgentError(
            f"a rollout returns a number (the reward), a list of spans or None, not {type(result).__name__}"
        )
    if isinstance(result, (int, float)):
        if not math.isfinite(result):
            raise AgentError(f"a reward must be a finite number, not {result}")
        return Outcome(reward=float(result))
    return Outcome(spans=tuple(_span(item, rollout) for item in result))


def _span(item: Any, rollout: Rollout) -> SpanIn:
    from producers.models import SpanIn

    data = item.model_dump() if isinstance(item, SpanIn) else item
    if not isinstance(data, Mapping):
        raise AgentError(f"a returned span is a dict or a SpanIn, not {type(item).__name__}")
    filled = {**data, "rollout_id": rollout.rollout_id, "attempt_id": rollout.attempt_id}
    # Ids drawn only where the span has none, as OpenTelemetry's SDK draws them (not from the OS's entropy: a
    # system call per id, for ids that need to be unique, not secret).
    if "trace_id" not in filled:
        filled["trace_id"] = f"{random.getrandbits(128) or 1:032x}"
    if "span_id" not in filled:
        filled["span_id"] = f"{random.getrandbits(64) or 1:016x}"
    try:
        return SpanIn.model_validate(filled)
    except ValidationError as e:
        raise AgentError(f"a returned span is not valid: {e}") from e


_RESOURCES: TypeAdapter[dict[str, Resource]] | None = None


def typed_resources(raw: Mapping[str, Any]) -> dict[str, Resource]:
    """Resources as the API answers them (JSON), as typed ``schemas`` resource models by name."""
    global _RESOURCES  # noqa: PLW0603 - built once, on first use: the adapter is costly and rarely needed at import
    if _RESOURCES is None:
        from schemas import Resource

        _RESOURCES = TypeAdapter(dict[str, Resource])
    return _RESOURCES.validate_python(dict(raw))
