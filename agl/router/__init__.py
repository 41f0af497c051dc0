"""The assignment router as the application composes it: the policy from settings, the table from the agent types.

The command API (``producers.router``) cannot import ``agl``; the task kind -> agent types table of
:mod:`agl.agents.kinds` is handed to it here, so a rollout given a type requires that kind's capabilities plus
``agent:<type>``, which only that type's workers declare.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agl.agents import kinds
from agl.errors import ConfigError
from producers.router import Router
from producers.router_policy import Prior

if TYPE_CHECKING:
    from core.config import Settings


class AgentKindsTable:
    """:mod:`agl.agents.kinds` seen as the router's table; a kind it does not know is not routed."""

    def candidates(self, task_kind: str) -> tuple[str, ...]:
        try:
            return kinds.agent_types_for(task_kind)
        except ConfigError:
            return ()

    def capabilities(self, task_kind: str, agent_type: str) -> tuple[str, ...]:
        return kinds.pinned_to(task_kind, agent_type)


def router_for(settings: Settings) -> Router:
    """The router of an API process (no I/O until its first decision)."""
    return Router(
        policy=settings.router,
        prior=Prior(settings.router_prior_alpha, settings.router_prior_beta),
        table=AgentKindsTable(),
        cache_s=settings.router_cache_s,
    )
