"""The OTLP/HTTP trace receiver: ``POST /v1/traces``, so any OpenTelemetry-instrumented agent can send its traces.

Point an exporter at the API's base URL (``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8000``, or
``OTLPSpanExporter(endpoint="http://127.0.0.1:8000/v1/traces")``) and set the resource (or span) attributes
``agentlightning.rollout_id`` and ``agentlightning.attempt_id``; ``agentlightning.span_sequence_id`` is optional.

- Bodies: protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``), plain, gzip or deflate.
  Another content type is 415, another encoding 415; a body larger than ``AGL_OTLP_MAX_BODY_BYTES`` (20 MiB),
  as sent or once decompressed, 413; a body that does not decode, 400. Error bodies are a ``google.rpc.Status``
  in the request's content type (JSON when the content type is not one of the two).
- Every span of a rollout becomes a ``span.recorded`` event, through the same outbox as ``POST /v1/spans``
  (numbered from the rollout's counter when it has no sequence id). A span without both ids is kept as a
  ``trace.span_unattached`` event on the topic ``agl.traces.v1``, keyed by trace id: read them with any Kafka
  consumer of that topic, or in SQL from the archive
  (``SELECT payload FROM archive_g1.events WHERE type = 'trace.span_unattached'``).
- 200 with an empty ExportTraceServiceResponse when every span was taken; 200 with ``partial_success``
  (``rejected_spans`` and the reasons in ``error_message``) when some could not be stored (see
  ``producers.otlp_spans``): an exporter must not resend those.
- Resending a batch is harmless: the request is committed once per digest of its (decompressed) body, so a
  retry answers the first request's events and publishes nothing new.
- Retryable answers are only 503 with ``Retry-After`` (no free database connection, the broker unavailable or
  the events not yet on the log; the events of a committed request are published later and a resend is answered
  from them). Any other failure is a non-retryable 500, so an exporter never loops on a bug.
- ``/v1/metrics`` and ``/v1/logs`` answer 501 with a Status body, as Agent Lightning's receiver does: this
  receiver takes traces only, and an exporter does not retry a 501.

The receiver is an ASGI middleware in front of the application's own (body size limit, unsafe-input guard, error
handlers): OTLP has its own size limit, answers every error with a Status body, and rejects an unstorable span
alone instead of the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import PoolTimeout

from core.errors import LightningError
from producers.idempotency import next_number
from producers.otlp_spans import Mapped, map_request
from producers.otlp_wire import (
    CONTENT_TYPES,
    JSON,
    PROTOBUF,
    WireError,
    decompressed,
    export_answer,
    media_type,
    parse_request,
    status_answer,
)
from producers.requests import commit_once

if TYPE_CHECKING:
    from fastapi import FastAPI
    from psycopg import AsyncConnection
    from starlette.types import ASGIApp, Receive, Scope, Send

    from producers.publisher import EventPublisher
    from schemas import Event

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
#: Signals this receiver does not take: answered 501, which an exporter does not retry.
OTHER_SIGNALS = ("/v1/metrics", "/v1/logs", "/v1/development/profiles")
#: The CloudEvents source of the events the receiver publishes.
SOURCE = "/agl/api/otlp"
#: What a 503 asks an exporter to wait, in seconds (the stock exporter honours Retry-After).
RETRY_AFTER_S = 1
#: The outbox route of committed OTLP requests (their Idempotency-Key is the body's digest).
ROUTE = "otlp-traces"


class _Answer:
    def __init__(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers or {}

    async def send(self, send: Send) -> None:
        headers = [(b"content-type", self.content_type.encode()), (b"content-length", str(len(self.body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def _status(content_type: str, status: int, message: str, headers: dict[str, str] | None = None) -> _Answer:
    answer_type = content_type if content_type in CONTENT_TYPES else JSON
    return _Answer(status, status_answer(answer_type, status, message), answer_type, headers)


class OtlpReceiver:
    """ASGI middleware answering the OTLP/HTTP paths itself; every other request goes on to ``app``."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "").rstrip("/") if scope["type"] == "http" else ""
        if path != TRACES_PATH and path not in OTHER_SIGNALS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        content_type = media_type(headers.get("content-type", ""))
        if scope["method"] != "POST":
            answer = _status(content_type, 405, f"{path} accepts POST only", {"Allow": "POST"})
        elif path in OTHER_SIGNALS:
            answer = _status(content_type, 501, f"this receiver takes traces only ({TRACES_PATH}), not {path}")
        else:
            answer = await self._export(scope, receive, headers, content_type)
        await answer.send(send)

    async def _export(self, scope: Scope, receive: Receive, headers: dict[str, str], content_type: str) -> _Answer:
        if content_type not in CONTENT_TYPES:
            return _status(content_type, 415, f"Content-Type must be {PROTOBUF} or {JSON}, not {content_type!r}")
        try:
            body = await self._body(receive, headers)
            body = decompressed(body, headers.get("content-encoding", ""), self.max_body_bytes)
            state = scope["app"].state
            if getattr(state, "relay", None) is None:  # the lifespan has not opened the pool and publisher yet
                return _busy(content_type, "the API is starting; resend shortly")
            envelope = {"source": SOURCE, "correlation_id": headers.get("x-correlation-id", "")[:200] or None}
            max_event_bytes = state.publisher.config.max_request_size - 1024
            # Decoding a large batch takes a while: off the event loop, which keeps serving other requests.
            mapped = await asyncio.to_thread(_decode, body, content_type, envelope, max_event_bytes)
            if mapped.attached or mapped.unattached:
                digest = hashlib.sha256(content_type.encode() + b"\n" + body).hexdigest()
                await _commit(state, mapped, digest)
        except Exception as e:  # noqa: BLE001 - every failure is answered by OTLP's rules, see _failure
            return _failure(content_type, e)
        return _Answer(200, export_answer(content_type, len(mapped.rejected), mapped.message()), content_type)

    async def _body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length", "")
        too_large = f"the body exceeds {self.max_body_bytes} bytes; export smaller batches"
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise WireError(413, too_large)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise WireError(400, "the client went away before the body was read")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise WireError(413, too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _failure(content_type: str, error: Exception) -> _Answer:
    """The answer to a failed export: the wire error's own, 503 for what a resend can fix, else 500."""
    if isinstance(error, WireError):
        return _status(content_type, error.status, error.message)
    if isinstance(error, (PoolTimeout, psycopg.OperationalError)):
        return _busy(content_type, f"no database connection could serve the request ({error}); retry shortly")
    if isinstance(error, LightningError) and (error.retriable or getattr(error, "http_status", None) == 503):
        return _busy(content_type, f"{error}; resend the same batch")
    # Not retryable: a bug must not make an exporter resend the batch for ever.
    log.error("OTLP export failed", exc_info=error)
    return _status(content_type, 500, f"the batch could not be recorded: {type(error).__name__}: {error}")


def _busy(content_type: str, message: str) -> _Answer:
    return _status(content_type, 503, message, {"Retry-After": str(RETRY_AFTER_S)})


def _decode(body: bytes, content_type: str, envelope: dict[str, Any], max_event_bytes: int) -> Mapped:
    return map_request(parse_request(body, content_type), envelope=envelope, max_event_bytes=max_event_bytes)


async def _commit(state: Any, mapped: Mapped, digest: str) -> None:
    """Commit the request's events once per body digest (a resent batch is answered from the first), numbering
    the spans without a sequence id in the same transaction, as ``POST /v1/spans`` does; wait until published."""
    publisher: EventPublisher = state.publisher

    async def build(conn: AsyncConnection[Any]) -> tuple[list[Event], dict[str, Any]]:
        missing = Counter(d.event.rollout_id for d in mapped.attached if not d.numbered)
        next_of: dict[str, int] = {}
        for rollout_id in sorted(missing):  # a fixed order, so concurrent batches cannot deadlock
            next_of[rollout_id] = await next_number(conn, "span_sequence", rollout_id, missing[rollout_id])
            next_of[rollout_id] -= missing[rollout_id] - 1
        events: list[Event] = []
        for draft in mapped.attached:
            if draft.numbered:
                events.append(draft.event)
            else:
                events.append(draft.event.model_copy(update={"sequence_id": next_of[draft.event.rollout_id]}))
                next_of[draft.event.rollout_id] += 1
        events.extend(mapped.unattached)
        return events, {}

    await commit_once(state.pool, publisher, state.relay, route=ROUTE, key=digest, digest=digest, build=build)


def document_receiver(app: FastAPI) -> None:
    """Describe the receiver in the OpenAPI document: the middleware answers it, so FastAPI cannot see it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        cached = app.openapi_schema is not None
        document = build()
        if not cached:
            document.setdefault("paths", {})[TRACES_PATH] = {"post": _OPERATION}
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas["OtlpStatus"] = _STATUS_SCHEMA
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def status_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROTOBUF: {}, JSON: {"schema": {"$ref": "#/components/schemas/OtlpStatus"}}},
    }


_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "google.rpc.Status, the body of every OTLP error answer",
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
}
_OPERATION: dict[str, Any] = {
    "tags": ["otlp"],
    "summary": "Receive OpenTelemetry traces (OTLP/HTTP)",
    "description": (__doc__ or "").split("\n\n", 1)[1].split("\n\nThe receiver is", 1)[0],
    "operationId": "export_traces",
    "requestBody": {
        "required": True,
        "content": {
            PROTOBUF: {"schema": {"description": "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"}},
            JSON: {"schema": {"type": "object", "description": "ExportTraceServiceRequest in OTLP/JSON (hex ids)"}},
        },
    },
    "responses": {
        "200": {
            "description": "taken (an empty ExportTraceServiceResponse), or partly (partial_success)",
            "content": {PROTOBUF: {}, JSON: {"schema": {"type": "object"}}},
        },
        "400": status_response("the body does not decode"),
        "413": status_response("the body, as sent or decompressed, exceeds AGL_OTLP_MAX_BODY_BYTES"),
        "415": status_response("a content type or encoding the receiver does not speak"),
        "500": status_response("the batch could not be recorded (not retryable)"),
        "503": status_response("busy or the broker is unavailable: resend after Retry-After"),
    },
}
