"""Agent Lightning ES: what agent authors import (``import agl``).

``agl.Client`` / ``agl.AsyncClient`` send commands (rollouts, resources, knowledge, rewards, spans) to the API.
They are loaded on first use: importing ``agl`` stays cheap for the CLI, and ``schemas`` (which imports
``agl.errors``) can import this package without a cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agl import emitters, tracer
    from agl.agent import LitAgent, Rollout, current_rollout, rollout
    from agl.dev_loop import dev
    from agl.emitters import emit_exception, emit_message, emit_object, emit_reward, operation
    from agl.runner import Runner, RunnerOptions
    from producers.client import AsyncClient, Client, RetryPolicy
    from producers.errors import ApiUnavailable, CommandRejected
    from producers.models import DocumentIn, RewardIn, RolloutIn, SpanIn

#: Public name -> the module that defines it.
_EXPORTS = {
    "AsyncClient": "producers.client",
    "Client": "producers.client",
    "RetryPolicy": "producers.client",
    "ApiUnavailable": "producers.errors",
    "CommandRejected": "producers.errors",
    "DocumentIn": "producers.models",
    "RewardIn": "producers.models",
    "RolloutIn": "producers.models",
    "SpanIn": "producers.models",
    "LitAgent": "agl.agent",
    "Rollout": "agl.agent",
    "current_rollout": "agl.agent",
    "emit_reward": "agl.emitters",
    "emit_message": "agl.emitters",
    "emit_object": "agl.emitters",
    "emit_exception": "agl.emitters",
    "operation": "agl.emitters",
    "rollout": "agl.agent",
    "Runner": "agl.runner",
    "RunnerOptions": "agl.runner",
    "dev": "agl.dev_loop",
}

__all__ = [
    "ApiUnavailable",
    "AsyncClient",
    "Client",
    "CommandRejected",
    "DocumentIn",
    "LitAgent",
    "RetryPolicy",
    "RewardIn",
    "Rollout",
    "RolloutIn",
    "Runner",
    "RunnerOptions",
    "SpanIn",
    "current_rollout",
    "dev",
    "emit_exception",
    "emit_message",
    "emit_object",
    "emit_reward",
    "emitters",
    "operation",
    "rollout",
    "tracer",
]

#: Submodules reachable as attributes (``agl.tracer.get_tracer()``) without importing them first.
_SUBMODULES = frozenset({"emitters", "tracer", "memory"})


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"agl.{name}")
    raise AttributeError(f"module 'agl' has no attribute {name!r}")
