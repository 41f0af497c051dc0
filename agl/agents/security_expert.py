"""The security expert: names attacks and defences; its tool looks up weakness classes by keyword."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agl.agents.base import SpecialistAgent, Tool

#: keyword in the prompt -> the weakness class and its usual defence
WEAKNESSES = {
    "sql": "SQL injection; defence: parameterized queries",
    "script": "cross-site scripting (XSS); defence: output encoding",
    "password": "credential stuffing and brute force; defence: rate limiting and hashing with bcrypt",
    "forged": "cross-site request forgery (CSRF); defence: CSRF tokens",
    "path": "path traversal; defence: canonicalize and allow-list paths",
}


def weakness_lookup(task: Mapping[str, Any]) -> str | None:
    prompt = str(task.get("prompt", "")).lower()
    found = [text for key, text in WEAKNESSES.items() if key in prompt]
    return "; ".join(found) or None


class SecurityExpert(SpecialistAgent):
    agent_type = "security_expert"
    system_prompt = "You are a security expert doing threat modelling. Name the attack or defence briefly."
    tools = (Tool("weakness_lookup", weakness_lookup),)


agent = SecurityExpert()
