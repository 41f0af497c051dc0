"""Task kinds and the capabilities a worker needs for each: the one table routing reads.

A rollout of kind ``k`` is enqueued with ``required_capabilities = capabilities_for(k)``; the lifecycle hands it
only to a worker declaring all of them. Several agent types can serve one kind (``python``: the web developer, the
data analyst and the QA tester); a router that picks one type adds the capability ``agent:<type>``
(:func:`pinned_to`), which only that type's workers declare.
"""

from __future__ import annotations

from agl.agents import AGENT_TYPES
from agl.errors import ConfigError

#: The capabilities each agent type declares (besides ``agent:<type>`` and ``version:<v>``).
AGENT_CAPABILITIES: dict[str, tuple[str, ...]] = {
    "web_developer": ("python", "javascript", "web"),
    "data_analyst": ("python", "sql", "statistics"),
    "security_expert": ("threat-model", "security"),
    "devops_engineer": ("ci", "containers", "shell"),
    "qa_tester": ("python", "test-design"),
    "general_assistant": ("general",),
}

#: Task kind -> the capabilities it requires.
TASK_KINDS: dict[str, tuple[str, ...]] = {
    "web": ("web",),
    "analysis": ("sql",),
    "security": ("threat-model",),
    "ops": ("ci",),
    "testing": ("test-design",),
    "general": ("general",),
    "python": ("python",),
}


def capabilities_for(kind: str) -> tuple[str, ...]:
    """The capabilities a rollout of ``kind`` requires."""
    try:
        return TASK_KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown task kind {kind!r}; known: {', '.join(sorted(TASK_KINDS))}") from None


def agent_types_for(kind: str) -> tuple[str, ...]:
    """The agent types whose declared capabilities cover ``kind`` (the choices a router has)."""
    needed = set(capabilities_for(kind))
    return tuple(t for t in AGENT_TYPES if needed <= set(AGENT_CAPABILITIES[t]))


def type_capability(agent_type: str) -> str:
    return f"agent:{agent_type}"


def pinned_to(kind: str, agent_type: str) -> tuple[str, ...]:
    """The capabilities of a rollout of ``kind`` that only ``agent_type``'s workers may claim."""
    if agent_type not in agent_types_for(kind):
        raise ConfigError(f"agent type {agent_type!r} cannot serve task kind {kind!r}")
    return (*capabilities_for(kind), type_capability(agent_type))


def worker_capabilities(agent_type: str, version: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """What a worker of ``agent_type`` registers: its capabilities, its type and its version."""
    if agent_type not in AGENT_CAPABILITIES:
        raise ConfigError(f"unknown agent type {agent_type!r}; known: {', '.join(AGENT_TYPES)}")
    declared = (*AGENT_CAPABILITIES[agent_type], *extra, type_capability(agent_type), f"version:{version}")
    return tuple(dict.fromkeys(declared))
