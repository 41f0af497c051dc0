"""Wires metrics, correlation ids and self-tracing into the API, and serves ``GET /metrics``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agl.observability.correlation import CorrelationMiddleware
from agl.observability.http_metrics import RequestMetrics, request_histogram
from agl.observability.scrape import FiguresCollector, ScrapeFigures
from agl.observability.tracing import RouteSpanName, add_tracing, tracer_provider
from producers.metrics import PROCESS_REGISTRY

if TYPE_CHECKING:
    from fastapi import FastAPI

    from core.config import Settings


def install_observability(app: FastAPI, settings: Settings) -> None:
    """Middlewares run outermost first: the server span, then the correlation id (it may come from the span),
    then the latency timer, closest to the routes."""
    registry = CollectorRegistry(auto_describe=True)  # per app: tests build many apps in one process
    figures = ScrapeFigures()
    registry.register(FiguresCollector(figures))
    app.add_middleware(RequestMetrics, histogram=request_histogram(registry))
    endpoint = settings.otel_exporter_otlp_endpoint
    if endpoint:
        app.add_middleware(RouteSpanName)
    app.add_middleware(CorrelationMiddleware, own_spans=bool(endpoint))
    if endpoint:
        app.state.tracer_provider = provider = tracer_provider(endpoint)
        add_tracing(app, provider)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition: this app's figures, the process's publish counters, process metrics."""
        await figures.refresh(request)
        body = b"".join(generate_latest(r) for r in (registry, PROCESS_REGISTRY, REGISTRY))
        return Response(body, media_type=CONTENT_TYPE_LATEST)
