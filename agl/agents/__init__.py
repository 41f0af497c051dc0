"""Six specialised agent types that run as pools of ``agl runner`` processes (``agl agents up``).

Each type is a :class:`~agl.agents.base.SpecialistAgent` in a module of its own, with its system prompt, its
tools, the capabilities it declares and a task set under ``tasks/``; :mod:`agl.agents.kinds` maps a task kind to
the capabilities a worker needs for it.
"""

from __future__ import annotations

AGENT_TYPES = (
    "web_developer",
    "data_analyst",
    "security_expert",
    "devops_engineer",
    "qa_tester",
    "general_assistant",
)
#: Bumped when an agent's prompt, tools or grading change: workers register it as the capability ``version:<v>``.
AGENTS_VERSION = "1"
