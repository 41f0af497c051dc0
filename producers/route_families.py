"""Which family a request belongs to: the unit of rate limits (and of API key scopes, planned).

Families follow who calls: ``publish`` (users and algorithms putting tasks, resources and documents in),
``run`` (runners claiming and reporting attempts, workers' heartbeats), ``traces`` (spans, rewards, OTLP, the
compat span and log routes), ``llm`` (the LLM proxy: one request per model call, the costliest), ``read`` (every
query, including the POST searches and waits of the compat API), ``admin`` (the rest), and ``health`` (probes,
never limited: a limited liveness probe would get a healthy process killed).

A pure function of the method and the raw path, so the rate limiter needs no routing and an unknown path still
gets a family (``read`` for GET, ``admin`` otherwise).
"""

from __future__ import annotations

import re
from typing import Literal

Family = Literal["publish", "run", "traces", "llm", "read", "admin", "health"]

FAMILIES: tuple[Family, ...] = ("publish", "run", "traces", "llm", "read", "admin", "health")

_HEALTH = frozenset({"/healthz", "/readyz", "/v1/agl/health"})
_ID = r"[^/]+"

#: (methods, path pattern, family), first match wins; ``*`` is any method.
_RULE_TEXTS: tuple[tuple[str, str, Family], ...] = (
    # The LLM proxy, with or without the /rollout/{id}/attempt/{id} prefix.
    ("POST", rf"(/rollout/{_ID}/attempt/{_ID})?/v1/(chat/)?completions", "llm"),
    # Traces and rewards, ours and Agent Lightning's.
    ("POST", r"/v1/(spans|rewards|traces|logs|metrics|development/profiles)", "traces"),
    ("POST", r"/v1/agl/spans(/next)?", "traces"),
    ("POST", r"/rollout", "traces"),  # v0.1: a finished task's result
    # Runners: claims, attempts, workers, context of an attempt.
    ("POST", r"/v1/rollouts/dequeue", "run"),
    ("POST", rf"/v1/rollouts/{_ID}/attempts/{_ID}/(running|heartbeat|finish|context)", "run"),
    ("POST", rf"/v1/workers/(register|{_ID}/heartbeat|{_ID}/deregister|{_ID}/reports)", "run"),
    ("POST", r"/v1/agl/queues/rollouts/dequeue", "run"),
    ("POST", rf"/v1/agl/rollouts/{_ID}/attempts(/{_ID})?", "run"),
    ("POST", rf"/v1/agl/workers/{_ID}", "run"),
    ("GET", r"/task", "run"),  # v0.1: a runner asking for work
    # Queries sent as POST.
    ("POST", r"/v1/rollouts/wait", "read"),
    ("POST", r"/v1/agl/(waits/rollouts|rollouts/search|workers/search|spans/search)", "read"),
    ("POST", rf"/v1/agl/rollouts/{_ID}/attempts/search", "read"),
    # Publishing.
    ("POST", r"/v1/rollouts", "publish"),
    ("POST", rf"/v1/rollouts/{_ID}/cancel", "publish"),
    ("POST", r"/v1/resources", "publish"),
    ("POST|DELETE", rf"/v1/knowledge/documents(/{_ID})?", "publish"),
    ("POST", r"/v1/agl/queues/rollouts/enqueue", "publish"),
    ("POST", rf"/v1/agl/(rollouts|resources)(/{_ID})?", "publish"),
)
_RULES = tuple((methods, re.compile(f"^{pattern}$"), family) for methods, pattern, family in _RULE_TEXTS)


def route_family(method: str, path: str) -> Family:
    """The family of a request: see the module's docstring."""
    if path in _HEALTH:
        return "health"
    method = method.upper()
    if method == "HEAD":
        method = "GET"
    for methods, pattern, family in _RULES:
        if (methods == "*" or method in methods.split("|")) and pattern.match(path):
            return family
    return "read" if method == "GET" else "admin"
