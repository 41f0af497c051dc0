"""The data analyst: statistics over small data sets; its tool describes the numbers of the task."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from agl.agents.base import SpecialistAgent, Tool


def describe(task: Mapping[str, Any]) -> str | None:
    """Count, sum, mean, median, min and max of the task's ``data.numbers``."""
    numbers = (task.get("data") or {}).get("numbers")
    if not numbers:
        return None
    return (
        f"count={len(numbers)} sum={sum(numbers):g} mean={statistics.fmean(numbers):g} "
        f"median={statistics.median(numbers):g} min={min(numbers):g} max={max(numbers):g}"
    )


class DataAnalyst(SpecialistAgent):
    agent_type = "data_analyst"
    system_prompt = "You are a data analyst. Answer with the number only."
    tools = (Tool("describe", describe),)


agent = DataAnalyst()
