"""The correlation id of each request, for logs and events.

A client's ``X-Correlation-ID`` is kept. Without one, a request that is part of a trace (a ``traceparent`` header,
or the server span of our own tracing) gets the trace id as its correlation id, written into the request's headers,
so the events the request publishes carry it and a trace and its events can be joined.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from opentelemetry import trace

from agl.observability.logs import correlation_id

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

HEADER = b"x-correlation-id"
#: W3C trace context: version-traceid-parentid-flags.
_TRACEPARENT = re.compile(rb"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def _trace_id(headers: list[tuple[bytes, bytes]], *, own_spans: bool) -> str | None:
    # Only our own server span counts: another tracer provider in the process (an agent's, FastAPI's own spans
    # under it) is not this API tracing itself, and its ids would join nothing a user can see.
    span = trace.get_current_span().get_span_context()
    if own_spans and span.is_valid:
        return format(span.trace_id, "032x")
    for name, value in headers:
        if name == b"traceparent" and (m := _TRACEPARENT.match(value.strip())):
            return m.group(1).decode()
    return None


class CorrelationMiddleware:
    def __init__(self, app: ASGIApp, *, own_spans: bool = False) -> None:
        self.app = app
        self.own_spans = own_spans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        given = next((v.decode("latin-1") for k, v in headers if k == HEADER), None)
        value = given or _trace_id(headers, own_spans=self.own_spans)
        if value and not given:
            scope = {**scope, "headers": [*headers, (HEADER, value.encode())]}
        token = correlation_id.set(value)
        try:
            await self.app(scope, receive, send)
        finally:
            correlation_id.reset(token)
