"""The web developer: HTTP and front-end questions; its tool looks up HTTP status codes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agl.agents.base import SpecialistAgent, Tool

STATUS_CODES = {
    200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
    429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip


def http_status(task: Mapping[str, Any]) -> str | None:
    """The status codes whose reason phrase the prompt mentions."""
    prompt = str(task.get("prompt", "")).lower()
    found = [f"{code} {name}" for code, name in STATUS_CODES.items() if name.lower() in prompt]
    return ", ".join(found) or None


class WebDeveloper(SpecialistAgent):
    agent_type = "web_developer"
    system_prompt = "You are a web developer. Answer briefly and exactly."
    tools = (Tool("http_status", http_status),)


agent = WebDeveloper()
