"""Self-tracing: with OTEL_EXPORTER_OTLP_ENDPOINT set, the API sends a server span per request, named by route
template and continuing the caller's trace, to a real OTLP/HTTP endpoint (a small collector thread here)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agl.app import create_app
from tests.producers.conftest import api_settings

pytestmark = [pytest.mark.pg, pytest.mark.kafka]

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


class Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CollectorHandler)
        self.requests: list[tuple[str, ExportTraceServiceRequest]] = []


class CollectorHandler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, ExportTraceServiceRequest.FromString(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest_asyncio.fixture(loop_scope="session")
async def traced(kafka_bootstrap, kafka_topics, pg_url, collector) -> AsyncIterator[tuple[object, httpx.AsyncClient]]:
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    settings = api_settings(kafka_bootstrap, pg_url, kafka_topics, otel_exporter_otlp_endpoint=endpoint)
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=60) as api,
    ):
        yield app, api
    app.state.tracer_provider.shutdown()


async def test_server_spans_continue_the_callers_trace_under_the_route_template(traced, collector):
    app, api = traced
    traceparent = f"00-{TRACE_ID}-b7ad6b7169203331-01"
    assert (await api.get("/v1/rollouts/ro-x", params={"wait_ms": 0}, headers={"traceparent": traceparent})).status_code
    assert (await api.get("/healthz")).status_code == 200
    assert app.state.tracer_provider.force_flush(10_000)
    spans = [
        span
        for path, request in collector.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
        if path == "/v1/traces"
    ]
    assert [(s.name, s.trace_id.hex(), s.parent_span_id.hex()) for s in spans] == [
        ("GET /v1/rollouts/{rollout_id}", TRACE_ID, "b7ad6b7169203331")
    ]  # and no span for the probe
    attributes = {a.key: a.value.string_value for a in spans[0].attributes}
    assert attributes["http.route"] == "/v1/rollouts/{rollout_id}"
    (service,) = [
        a.value.string_value
        for _, request in collector.requests
        for a in request.resource_spans[0].resource.attributes
        if a.key == "service.name"
    ]
    assert service == "agl-api"
