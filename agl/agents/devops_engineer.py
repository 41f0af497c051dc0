"""The DevOps engineer: CI, containers and services; its tool knows default ports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agl.agents.base import SpecialistAgent, Tool

DEFAULT_PORTS = {"postgresql": 5432, "redis": 6379, "kafka": 9092, "ssh": 22, "http": 80, "https": 443, "mysql": 3306}


def default_port(task: Mapping[str, Any]) -> str | None:
    prompt = str(task.get("prompt", "")).lower()
    found = [f"{name} listens on port {port}" for name, port in DEFAULT_PORTS.items() if name in prompt]
    return ", ".join(found) or None


class DevopsEngineer(SpecialistAgent):
    agent_type = "devops_engineer"
    system_prompt = "You are a DevOps engineer. Answer briefly and exactly."
    tools = (Tool("default_port", default_port),)


agent = DevopsEngineer()
