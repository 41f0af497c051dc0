"""The API tracing itself with OpenTelemetry, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` names a collector.

Server spans come from the ASGI instrumentation (it continues an incoming ``traceparent``); they are named by
method and route template once the router has matched, never by raw path. Probes and scrapes are not traced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

SERVICE_NAME = "agl-api"
UNTRACED = "/healthz,/readyz,/metrics,/dashboard"


def tracer_provider(endpoint: str) -> TracerProvider:
    """Spans batched to ``endpoint``'s OTLP/HTTP traces path (the provider flushes at interpreter exit)."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _method_only(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    # The raw path is not known to be bounded; RouteSpanName renames the span once the route is matched.
    return str(scope.get("method", "HTTP")), {}


class RouteSpanName:
    """Names the current server span ``METHOD /route/{template}`` once the router matched: when the response
    starts (the instrumentation ends the span with the last body message, before this middleware returns)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            route = getattr(scope.get("route"), "path", None)
            span = trace.get_current_span()
            if message["type"] == "http.response.start" and route and span.is_recording():
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
            await send(message)

        await self.app(scope, receive, sending)


def add_tracing(app: FastAPI, provider: TracerProvider) -> None:
    """The outer server-span middleware (add it last: Starlette runs the last added first)."""
    app.add_middleware(
        OpenTelemetryMiddleware,
        tracer_provider=provider,
        excluded_urls=UNTRACED,
        default_span_details=_method_only,
        exclude_spans=["receive", "send"],  # one server span per request, not one per ASGI message
    )
