"""Request latency histograms by route template and status, measured by a pure ASGI middleware."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Buckets from a cached read (a few ms) to a long ``?after=`` wait or an LLM proxy call (30 s and more).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: The label of requests no route matched: raw paths would let any client grow the series without bound.
UNMATCHED = "unmatched"


def request_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "agl_http_request_duration_seconds",
        "HTTP request latency, by method, route template and status code",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )


class RequestMetrics:
    """Times each HTTP request until its response ends. The label is the route's template (``/v1/rollouts/{id}``),
    which the router writes into the shared scope when it matches."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is answered 500 by the server

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.histogram.labels(scope["method"], route, str(status)).observe(time.perf_counter() - started)
