"""The OTLP/HTTP trace receiver (POST /v1/traces) against the real broker and PostgreSQL.

Spans come from a real OpenTelemetry SDK and the stock ``OTLPSpanExporter`` over real HTTP, and from hand-written
OTLP/JSON and protobuf bodies; what the receiver publishes is read back from Kafka.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from agl.app import create_app
from agl.stack._process import free_port
from schemas import SpanRecorded, SpanUnattached, decode
from schemas.topics import SPANS, TRACES
from tests.fixtures.records import read_records
from tests.producers.conftest import api_settings
from tests.producers.test_client import serving
from tests.producers.test_hostile_input import _records_on

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}
T0_NS = 1_735_689_600_123_456_789  # 2025-01-01T00:00:00.123456789Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def events_on(bootstrap: str, topic: str, count: int) -> list[Any]:
    return [decode(r.value, r.headers) for r in await read_records(bootstrap, topic, count)]


def sdk_spans(resource: dict[str, Any]) -> list[ReadableSpan]:
    """Spans made by a real SDK tracer: an agent span, an LLM call under it, one overriding ids per span."""
    provider = TracerProvider(resource=Resource.create(resource))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test-agent", "1.2.3")
    with tracer.start_as_current_span("agent") as agent:
        with tracer.start_as_current_span("openai.chat.completion", kind=SpanKind.CLIENT) as call:
            call.set_attribute("gen_ai.response.id", "chatcmpl-1")
            call.set_attribute("prompt_token_ids", [1, 2, 3])
            call.set_attribute("gen_ai.usage.input_tokens", 3)
            call.set_attribute("gen_ai.request.temperature", 0.5)
            call.set_attribute("stream", False)
            call.add_event("first_token", {"at": 1})
        with tracer.start_as_current_span("tool", links=[Link(agent.get_span_context(), {"why": "caller"})]) as tool:
            tool.set_attribute("agentlightning.attempt_id", "at-2")  # a span attribute overrides the resource
            tool.set_status(Status(StatusCode.ERROR, "tool failed"))
        with tracer.start_as_current_span("numbered") as numbered:
            numbered.set_attribute("agentlightning.span_sequence_id", 7)
    provider.shutdown()
    return list(memory.get_finished_spans())


def _hex(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


async def test_the_stock_exporter_sends_gzip_spans_that_arrive_as_span_recorded(app, kafka_bootstrap, kafka_topics):
    spans = sdk_spans({"agentlightning.rollout_id": "ro-otel", "agentlightning.attempt_id": "at-1"})
    async with serving(app, free_port()) as url:
        exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=Compression.Gzip)
        result = await asyncio.to_thread(exporter.export, spans)
        exporter.shutdown()  # type: ignore[no-untyped-call]
    assert result is SpanExportResult.SUCCESS
    events = await events_on(kafka_bootstrap, SPANS.full_name(kafka_topics), len(spans))
    assert len(events) == 4 and all(isinstance(e, SpanRecorded) for e in events)
    by_name = {e.name: e for e in events}
    sdk = {s.name: s for s in spans}
    for name, event in by_name.items():
        assert (event.trace_id, event.span_id) == _hex(sdk[name])
        assert event.rollout_id == "ro-otel"
        assert event.resource["agentlightning.rollout_id"] == "ro-otel"
        assert event.resource["telemetry.sdk.language"] == "python"
        start_ns = sdk[name].start_time
        assert start_ns is not None
        assert event.start_time == EPOCH + timedelta(microseconds=start_ns // 1000)
        assert event.source == "/agl/api/otlp"
    agent, call, tool = by_name["agent"], by_name["openai.chat.completion"], by_name["tool"]
    assert agent.parent_id is None and call.parent_id == agent.span_id == tool.parent_id
    assert call.kind == "CLIENT" and agent.kind == "INTERNAL"
    assert {k: call.attributes[k] for k in ("gen_ai.response.id", "prompt_token_ids", "stream")} == {
        "gen_ai.response.id": "chatcmpl-1",
        "prompt_token_ids": [1, 2, 3],
        "stream": False,
    }
    assert call.attributes["gen_ai.usage.input_tokens"] == 3 and call.attributes["gen_ai.request.temperature"] == 0.5
    assert [(e.name, e.attributes) for e in call.events] == [("first_token", {"at": 1})]
    assert (tool.attempt_id, tool.status.status_code, tool.status.description) == ("at-2", "ERROR", "tool failed")
    assert [(link.span_id, link.attributes) for link in tool.links] == [(agent.span_id, {"why": "caller"})]
    # Spans without a sequence id are numbered from the rollout's counter in the batch's order; 7 is kept.
    numbered = by_name["numbered"]
    assert numbered.sequence_id == 7
    unnumbered = [s.name for s in spans if s.name != "numbered"]
    assert [by_name[n].sequence_id for n in unnumbered] == [1, 2, 3]


def otlp_json(trace_hex: str, **span: Any) -> dict[str, Any]:
    """A hand-written OTLP/JSON request: hex ids, int64 as strings, integer enums, unknown fields."""
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "agentlightning.rollout_id", "value": {"stringValue": "ro-json"}},
                        {"key": "agentlightning.attempt_id", "value": {"stringValue": "at-1"}},
                        {"key": "service.name", "value": {"stringValue": "go-agent"}},
                    ],
                    "droppedAttributesCount": 0,
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "manual", "version": "0.1"},
                        "spans": [
                            {
                                "traceId": trace_hex,
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "",
                                "name": "chat gpt-4o",
                                "kind": 3,
                                "startTimeUnixNano": str(T0_NS),
                                "endTimeUnixNano": T0_NS + 2_000_000_000,
                                "attributes": [
                                    {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "9007199254740993"}},
                                    {"key": "n", "value": {"intValue": 5}},
                                    {"key": "ratio", "value": {"doubleValue": 0.25}},
                                    {"key": "blob", "value": {"bytesValue": base64.b64encode(b"\x00\xff").decode()}},
                                    {
                                        "key": "response_token_ids",
                                        "value": {"arrayValue": {"values": [{"intValue": "4"}, {"intValue": 5}]}},
                                    },
                                    {
                                        "key": "nested",
                                        "value": {
                                            "kvlistValue": {"values": [{"key": "k", "value": {"boolValue": True}}]}
                                        },
                                    },
                                    {"key": "empty", "value": {}},
                                ],
                                "events": [{"timeUnixNano": str(T0_NS), "name": "retry", "attributes": []}],
                                "links": [
                                    {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}
                                ],
                                "status": {"code": 1, "message": ""},
                                "flags": 257,
                                "someFutureField": {"x": 1},
                                **span,
                            }
                        ],
                    }
                ],
            }
        ],
        "unknownTopLevel": True,
    }


async def test_a_hand_written_otlp_json_body_with_hex_ids(api, kafka_bootstrap, kafka_topics):
    trace_hex = "5B8EFFF798038103D269B633813FC60C"  # hex is case-insensitive
    answer = await api.post("/v1/traces", content=json.dumps(otlp_json(trace_hex)), headers=JSON)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json" and answer.json() == {}
    [event] = await events_on(kafka_bootstrap, SPANS.full_name(kafka_topics), 1)
    assert isinstance(event, SpanRecorded)
    assert (event.trace_id, event.span_id, event.parent_id) == (trace_hex.lower(), "eee19b7ec3c1b174", None)
    assert (event.rollout_id, event.attempt_id, event.sequence_id, event.kind) == ("ro-json", "at-1", 1, "CLIENT")
    assert event.start_time == datetime(2025, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert event.end_time is not None and (event.end_time - event.start_time).total_seconds() == 2
    assert event.status.status_code == "OK" and event.status.description is None
    assert event.attributes == {
        "gen_ai.usage.output_tokens": 9007199254740993,  # int64 beyond a double's precision, intact
        "n": 5,
        "ratio": 0.25,
        "blob": base64.b64encode(b"\x00\xff").decode(),
        "response_token_ids": [4, 5],
        "nested": {"k": True},
        "empty": None,
    }
    assert [e.name for e in event.events] == ["retry"] and event.events[0].timestamp == event.start_time
    assert [(link.trace_id, link.span_id) for link in event.links] == [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    ]
    assert event.resource == {
        "agentlightning.rollout_id": "ro-json",
        "agentlightning.attempt_id": "at-1",
        "service.name": "go-agent",
    }


async def test_deflate_zlib_and_raw_are_accepted(api, kafka_bootstrap, kafka_topics):
    body = encode_spans(sdk_spans({"agentlightning.rollout_id": "ro-d", "agentlightning.attempt_id": "at-1"}))
    raw = body.SerializeToString()
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = deflater.compress(raw) + deflater.flush()
    for compressed in (zlib.compress(raw), raw_deflate):
        answer = await api.post("/v1/traces", content=compressed, headers=PROTOBUF | {"content-encoding": "deflate"})
        assert answer.status_code == 200 and answer.content == b""
        assert answer.headers["content-type"] == "application/x-protobuf"
    # The second body is the same batch, decompressed: it is the same request, recorded once.
    events = await events_on(kafka_bootstrap, SPANS.full_name(kafka_topics), 4)
    assert len(events) == 4 and {e.rollout_id for e in events} == {"ro-d"}


async def test_a_resent_batch_publishes_no_duplicates(api, kafka_bootstrap, kafka_topics):
    body = encode_spans(sdk_spans({"agentlightning.rollout_id": "ro-r", "agentlightning.attempt_id": "at-1"}))
    raw = body.SerializeToString()
    answers = [
        await api.post("/v1/traces", content=raw, headers=PROTOBUF),
        await api.post(
            "/v1/traces", content=gzip.compress(raw, mtime=1), headers=PROTOBUF | {"content-encoding": "gzip"}
        ),
        await api.post("/v1/traces", content=raw, headers=PROTOBUF),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    events = await events_on(kafka_bootstrap, SPANS.full_name(kafka_topics), 4)
    assert len(events) == 4 and sorted(e.sequence_id for e in events) == [1, 2, 3, 7]


async def test_a_zip_bomb_and_an_oversized_body_are_413_and_publish_nothing(api, kafka_bootstrap, kafka_topics):
    bomb = gzip.compress(b"\x00" * (21 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    answer = await api.post("/v1/traces", content=bomb, headers=PROTOBUF | {"content-encoding": "gzip"})
    assert answer.status_code == 413
    assert "decompressed body exceeds 20971520 bytes" in status_pb2.Status.FromString(answer.content).message
    assert "retry-after" not in answer.headers
    big = b"\x0a" * (21 * 1024 * 1024)
    answer = await api.post("/v1/traces", content=big, headers=JSON)
    assert answer.status_code == 413 and "exceeds 20971520 bytes" in answer.json()["message"]
    assert await _records_on(kafka_bootstrap, SPANS, kafka_topics) == 0


async def test_wrong_content_type_encoding_method_and_other_signals(api):
    wrong = await api.post("/v1/traces", content=b"{}", headers={"content-type": "text/plain"})
    assert wrong.status_code == 415 and "application/x-protobuf" in wrong.json()["message"]
    brotli = await api.post("/v1/traces", content=b"x", headers=PROTOBUF | {"content-encoding": "br"})
    assert brotli.status_code == 415
    assert "Content-Encoding 'br'" in status_pb2.Status.FromString(brotli.content).message
    get = await api.get("/v1/traces")
    assert get.status_code == 405 and get.headers["allow"] == "POST"
    for path in ("/v1/metrics", "/v1/logs"):
        answer = await api.post(path, content=b"", headers=PROTOBUF)
        assert answer.status_code == 501 and "traces only" in status_pb2.Status.FromString(answer.content).message
    empty = await api.post("/v1/traces", content=b"", headers=PROTOBUF)
    assert empty.status_code == 200 and empty.content == b""
    document = (await api.get("/openapi.json")).json()
    assert set(document["paths"]["/v1/traces"]["post"]["responses"]) >= {"200", "400", "413", "415", "503"}


async def test_undecodable_bodies_are_400_with_a_status_body(api, kafka_bootstrap, kafka_topics):
    garbage = await api.post("/v1/traces", content=b"\xff\xff\xff\xff", headers=PROTOBUF)
    assert garbage.status_code == 400 and garbage.headers["content-type"] == "application/x-protobuf"
    assert "protobuf" in status_pb2.Status.FromString(garbage.content).message
    not_json = await api.post("/v1/traces", content=b"{not json", headers=JSON)
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["message"]
    wrong_shape = await api.post("/v1/traces", content=b'{"resourceSpans": 3}', headers=JSON)
    assert wrong_shape.status_code == 400 and wrong_shape.json()["code"] == 3
    truncated = await api.post(
        "/v1/traces", content=gzip.compress(b"x" * 1000)[:-10], headers=PROTOBUF | {"content-encoding": "gzip"}
    )
    assert truncated.status_code == 400
    assert await _records_on(kafka_bootstrap, SPANS, kafka_topics) == 0


def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def _span(span_id: int, trace_id: bytes = b"\x01" * 16, **fields: Any) -> Span:
    fields.setdefault("start_time_unix_nano", T0_NS)
    return Span(trace_id=trace_id, span_id=span_id.to_bytes(8, "big"), name=f"s{span_id}", **fields)


def _request(spans: list[Span], resource: dict[str, str]) -> bytes:
    attributes = [_kv(k, AnyValue(string_value=v)) for k, v in resource.items()]
    resource_spans = ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])
    resource_spans.resource.attributes.extend(attributes)
    return ExportTraceServiceRequest(resource_spans=[resource_spans]).SerializeToString()


async def test_unstorable_spans_are_rejected_alone_in_partial_success(api, kafka_bootstrap, kafka_topics):
    ids = {"agentlightning.rollout_id": "ro-p", "agentlightning.attempt_id": "at-1"}
    spans = [
        _span(1),
        _span(2, trace_id=b"\x00" * 16),
        _span(3, attributes=[_kv("text", AnyValue(string_value="a\x00b"))]),
        _span(4, attributes=[_kv("score", AnyValue(double_value=float("nan")))]),
        _span(5, attributes=[_kv("huge", AnyValue(string_value="x" * 2_000_000))]),
        _span(6, attributes=[_kv("agentlightning.rollout_id", AnyValue(string_value="ro/with/slash"))]),
        _span(7, start_time_unix_nano=0),
        _span(8, parent_span_id=b"\x01\x02"),
        _span(9, attributes=[_kv("agentlightning.span_sequence_id", AnyValue(int_value=-3))]),
    ]
    answer = await api.post("/v1/traces", content=_request(spans, ids), headers=PROTOBUF)
    assert answer.status_code == 200
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_spans == 7
    message = partial.error_message
    assert message.startswith("7 span(s) rejected: span 0000000000000002: trace_id must be 16 bytes")
    assert "NUL" in message and "NaN" in message and "bytes as an event" in message and "and 2 more" in message
    events = await events_on(kafka_bootstrap, SPANS.full_name(kafka_topics), 2)
    # A negative sequence id is numbered, as Agent Lightning does.
    assert sorted((e.name, e.sequence_id) for e in events) == [("s1", 1), ("s9", 2)]
    as_json = await api.post("/v1/traces", content=json.dumps(otlp_json("not-hex")), headers=JSON)
    assert as_json.status_code == 200
    assert as_json.json() == {
        "partialSuccess": {"rejectedSpans": "1", "errorMessage": as_json.json()["partialSuccess"]["errorMessage"]}
    }
    assert "trace_id must be 16 bytes" in as_json.json()["partialSuccess"]["errorMessage"]


async def test_spans_without_rollout_and_attempt_are_kept_unattached(api, kafka_bootstrap, kafka_topics):
    only_rollout = _request([_span(1)], {"agentlightning.rollout_id": "ro-half", "service.name": "x"})
    neither = _request([_span(2, trace_id=b"\x02" * 16)], {"service.name": "foreign"})
    for body in (only_rollout, neither):
        answer = await api.post("/v1/traces", content=body, headers=PROTOBUF)
        assert answer.status_code == 200
        warning = ExportTraceServiceResponse.FromString(answer.content).partial_success
        assert warning.rejected_spans == 0 and "1 span(s) name no agentlightning.rollout_id" in warning.error_message
    records = await read_records(kafka_bootstrap, TRACES.full_name(kafka_topics), 2)
    events = [e for e in (decode(r.value, r.headers) for r in records) if isinstance(e, SpanUnattached)]
    events.sort(key=lambda e: e.span_id)
    assert len(events) == len(records) == 2
    assert [(e.trace_id, e.rollout_id, e.attempt_id) for e in events] == [
        ("01" * 16, "ro-half", None),
        ("02" * 16, None, None),
    ]
    assert {r.key for r in records} == {b"01" * 16, b"02" * 16}  # keyed by trace id
    assert events[1].resource == {"service.name": "foreign"}
    assert await _records_on(kafka_bootstrap, SPANS, kafka_topics) == 0


@pytest.fixture
async def one_connection_app(kafka_bootstrap: str, kafka_topics: str, pg_url: str) -> AsyncIterator[Any]:
    settings = api_settings(kafka_bootstrap, pg_url, kafka_topics, api_pool_size=1, api_pool_timeout_s=0.3)
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60):
        yield application


async def test_a_busy_database_is_503_with_retry_after_and_the_exporter_retries(
    one_connection_app, kafka_bootstrap, kafka_topics
):
    app = one_connection_app
    body = _request([_span(1)], {"agentlightning.rollout_id": "ro-b", "agentlightning.attempt_id": "at-1"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:
        async with app.state.pool.connection():  # the only connection is taken
            busy = await api.post("/v1/traces", content=body, headers=PROTOBUF)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "no database connection" in status_pb2.Status.FromString(busy.content).message
    spans = sdk_spans({"agentlightning.rollout_id": "ro-b", "agentlightning.attempt_id": "at-1"})
    async with serving(app, free_port()) as url:
        exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces")
        started = asyncio.get_running_loop().time()
        async with app.state.pool.connection():
            export = asyncio.create_task(asyncio.to_thread(exporter.export, spans))
            await asyncio.sleep(0.6)  # the first POST is answered 503; the exporter waits Retry-After, resends
        result = await export
        assert asyncio.get_running_loop().time() - started >= 1.0, "the exporter resent after Retry-After"
        exporter.shutdown()  # type: ignore[no-untyped-call]
    assert result is SpanExportResult.SUCCESS
    events = await events_on(kafka_bootstrap, SPANS.full_name(kafka_topics), 4)
    assert len(events) == 4 and {e.rollout_id for e in events} == {"ro-b"}
