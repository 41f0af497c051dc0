"""The QA tester: designs tests; its tool lists the boundary values of a range."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agl.agents.base import SpecialistAgent, Tool


def boundary_values(task: Mapping[str, Any]) -> str | None:
    """Just outside, on and just inside each end of the task's ``data.range`` [low, high]."""
    bounds = (task.get("data") or {}).get("range")
    if not bounds:
        return None
    low, high = bounds
    return f"test {low - 1}, {low}, {low + 1}, {high - 1}, {high}, {high + 1}"


class QaTester(SpecialistAgent):
    agent_type = "qa_tester"
    system_prompt = "You are a QA tester. Answer briefly with the values or test names asked for."
    tools = (Tool("boundary_values", boundary_values),)
    # Four boundary values and the model's preamble: 24 tokens cut the list short (rewards fell from 1.0 to 0.2-0.5).
    max_tokens = 48


agent = QaTester()
