"""An OpenAI-compatible LLM proxy in the API process: every call is forwarded to the rollout's LLM and recorded
as one ``span.recorded`` event, so agents that know nothing of tracing still produce training triplets.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions``, attributed by the headers ``x-rollout-id``
(required) and ``x-attempt-id`` (default: the rollout's newest attempt), and the same under
``/rollout/{rollout_id}/attempt/{attempt_id}``, the base URL ``ProxyLLMResource.routed_endpoint`` builds (Agent
Lightning's proxy accepts both). The backend and the attribution are resolved by ``llm_proxy_backend``; the body
is forwarded as sent except ``model`` (the resource's model), the resource's ``sampling_parameters`` as
defaults, and the token-id options the backend's kind accepts (``return_token_ids`` for vLLM, ``logprobs`` for
llama.cpp's chat, whose answers then carry logprobs the client did not ask for, with one ``top_logprobs`` unless
the client names a number: llama.cpp's own default is 20).

**Answers.** The backend's answer is relayed as it is: status, body bytes, and for ``stream: true`` the
server-sent events chunk by chunk as they arrive (not de-streamed: the chunk ids are the backend's, so the
``gen_ai.response.id`` recorded is the id the agent saw and can link a reward to). The answer carries
``x-agl-span-id`` (the recorded span, for ``agl.emit_reward(..., span_id=...)``) and ``x-agl-sequence-id``. A
backend that cannot be reached is ``502``, one that does not answer in time ``504``; an unknown rollout or
attempt ``404``, a rollout not yet claimed ``409``; every error body has OpenAI's shape (``{"error": {...}}``)
plus the project's ``detail``.

**Recording.** The span (name ``openai.chat.completion`` or ``openai.completion``, attributes as in
``llm_proxy_span``) is committed to the outbox after the backend has answered and before the answer is returned
(for a stream: when it ends, however it ends, shielded from cancellation). The relay publishes it as it publishes
every command's events; the answer does not wait for Kafka, since the committed row is already durable, so a
call costs one short PostgreSQL transaction more than the backend's own time, and a broker outage delays the
span, never the agent. A client that disconnects mid-stream still gets its span, with what had arrived and
status ``ERROR`` (``error.type`` ``cancelled``). A W3C ``traceparent`` header makes the span a child of the
caller's span, so the call sits inside the agent's trace tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import anyio
import httpx
import orjson
from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse, Response

from producers import outbox
from producers.errors import EventTooLarge
from producers.llm_proxy_backend import (
    Attribution,
    Backend,
    BackendDirectory,
    BackendKind,
    ProxyRefused,
    attribute,
)
from producers.llm_proxy_request import json_object, named_rollout, trace_context, upstream_body
from producers.llm_proxy_span import SPAN_ID_HEADER, ChunkAssembler, Exchange, Operation, slimmed, span_attributes
from producers.pipelined import pipelined_transaction
from schemas import SpanRecorded
from schemas.bounds import ID_PATTERN, MAX_ID_LENGTH
from schemas.spans import SpanStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from fastapi import FastAPI
    from psycopg_pool import AsyncConnectionPool
    from starlette.types import Receive, Scope, Send

    from core.config import Settings
    from producers.outbox import OutboxRelay
    from producers.publisher import EventPublisher

log = logging.getLogger(__name__)

#: The CloudEvents source of the spans the proxy records.
SOURCE = "/agl/api/llm-proxy"
SPAN_NAMES: dict[Operation, str] = {"chat": "openai.chat.completion", "text_completion": "openai.completion"}
PATHS: dict[Operation, str] = {"chat": "/chat/completions", "text_completion": "/completions"}
#: How long the span's recording waits for llama.cpp's prompt token ids (asked beside the call) at the most.
PROMPT_IDS_WAIT_S = 10.0
#: Upstream connect / write / pool budgets; the read budget (one chunk, or a whole reply) is a setting.
CONNECT_TIMEOUT_S = 10.0

router = APIRouter(tags=["llm proxy"])


class LLMProxy:
    """The proxy's state in the API process: one HTTP client for every backend, the backend directory, and the
    outbox the spans go through."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        publisher: EventPublisher,
        relay: OutboxRelay,
        http: httpx.AsyncClient,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.relay = relay
        self.http = http
        self.directory = BackendDirectory(pool, http)

    async def record(self, event: SpanRecorded) -> None:
        """Commit the span to the outbox (the relay publishes it). A failure is logged, never raised: the agent's
        answer is already decided.

        A span too large for one record (a long context with top logprobs) is recorded without its bulkiest
        attributes, logprobs first, then the messages' text, so the token ids training needs are kept.
        """
        for attempt in (event, *slimmed(event)):
            try:
                async with self.pool.connection() as conn, pipelined_transaction(conn):
                    await outbox.append(conn, self.publisher, [attempt])
            except EventTooLarge:
                continue
            except Exception:
                log.exception("the LLM proxy could not record span %s of rollout %s", event.span_id, event.rollout_id)
                return
            self.relay.kick()
            return
        log.error("span %s of rollout %s is too large to record, even slimmed", event.span_id, event.rollout_id)


@contextlib.asynccontextmanager
async def running_llm_proxy(app: FastAPI, settings: Settings, pool: AsyncConnectionPool[Any]) -> AsyncIterator[None]:
    """For the app's lifespan (after the command API started): the proxy's HTTP client, closed on exit."""
    timeout = httpx.Timeout(
        connect=CONNECT_TIMEOUT_S, read=settings.llm_proxy_timeout_s, write=CONNECT_TIMEOUT_S, pool=CONNECT_TIMEOUT_S
    )
    limits = httpx.Limits(max_connections=settings.llm_proxy_max_connections, max_keepalive_connections=32)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        app.state.llm_proxy = LLMProxy(pool, app.state.publisher, app.state.relay, http)
        yield


# -- routes ------------------------------------------------------------------------------------------------------
RolloutHeader = Annotated[
    str | None, Header(alias="x-rollout-id", pattern=ID_PATTERN, max_length=MAX_ID_LENGTH, description="the rollout")
]
AttemptHeader = Annotated[
    str | None,
    Header(
        alias="x-attempt-id", pattern=ID_PATTERN, max_length=MAX_ID_LENGTH, description="default: the newest attempt"
    ),
]
IdPath = Annotated[str, Path(pattern=ID_PATTERN, max_length=MAX_ID_LENGTH)]
_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not a JSON object, or the call names no rollout"},
    404: {"description": "unknown rollout or attempt, or its resources have no llm resource"},
    409: {"description": "the rollout has no attempt yet"},
    413: {"description": "the body exceeds AGL_API_MAX_BODY_BYTES"},
    422: {"description": "an id that is not one, or a value the stack cannot store (NUL, NaN...)"},
    502: {"description": "the backend could not be reached"},
    504: {"description": "the backend did not answer in time"},
}


@router.post("/v1/chat/completions", responses=_ANSWERS)
async def chat_completions(request: Request, rollout: RolloutHeader = None, attempt: AttemptHeader = None) -> Response:
    """OpenAI's chat completions, forwarded to the rollout's LLM and recorded as a span (stream or not)."""
    return await _proxy(request, "chat", rollout, attempt)


@router.post("/v1/completions", responses=_ANSWERS)
async def completions(request: Request, rollout: RolloutHeader = None, attempt: AttemptHeader = None) -> Response:
    """OpenAI's (legacy) text completions, forwarded and recorded as ``chat_completions`` is."""
    return await _proxy(request, "text_completion", rollout, attempt)


@router.post("/rollout/{rollout_id}/attempt/{attempt_id}/v1/chat/completions", responses=_ANSWERS)
async def routed_chat_completions(request: Request, rollout_id: IdPath, attempt_id: IdPath) -> Response:
    """``/v1/chat/completions`` attributed by the path (``ProxyLLMResource.routed_endpoint``)."""
    return await _proxy(request, "chat", rollout_id, attempt_id)


@router.post("/rollout/{rollout_id}/attempt/{attempt_id}/v1/completions", responses=_ANSWERS)
async def routed_completions(request: Request, rollout_id: IdPath, attempt_id: IdPath) -> Response:
    """``/v1/completions`` attributed by the path."""
    return await _proxy(request, "text_completion", rollout_id, attempt_id)


# -- one call ------------------------------------------------------------------------------------------------------
@dataclass
class _Call:
    """One proxied call: who it belongs to, where it goes, and the span it becomes."""

    proxy: LLMProxy
    operation: Operation
    who: Attribution
    backend: Backend
    kind: BackendKind
    body: dict[str, Any]
    trace_id: str
    parent_id: str | None
    started: datetime
    span_id: str = field(default_factory=lambda: os.urandom(8).hex())
    prompt_ids: asyncio.Task[list[int] | None] | None = None

    @property
    def url(self) -> str:
        return self.backend.endpoint + PATHS[self.operation]

    @property
    def headers(self) -> dict[str, str]:
        """What the agent learns beside the backend's answer: the span to link a reward to."""
        return {SPAN_ID_HEADER: self.span_id, "x-agl-sequence-id": str(self.who.sequence_id)}

    async def finish(self, exchange: Exchange | None, *, http_status: int | None, failure: str | None) -> None:
        """Record the call's span: the answer as far as it got, and what went wrong if anything did."""
        prompt_ids = await self._prompt_ids(wanted=exchange is not None and not exchange.prompt_token_ids)
        attributes = span_attributes(
            self.operation, self.body, exchange, provider=self.kind, prompt_token_ids=prompt_ids
        )
        attributes["server.address"] = urlsplit(self.backend.endpoint).hostname or ""
        attributes["agentlightning.resources_id"] = self.backend.resources_id
        attributes["agentlightning.resources_version"] = self.backend.resources_version
        if http_status is not None:
            attributes["http.response.status_code"] = http_status
        if failure is not None:
            attributes["error.type"] = failure.split(":", 1)[0]
        event = SpanRecorded(
            rollout_id=self.who.rollout_id,
            attempt_id=self.who.attempt_id,
            sequence_id=self.who.sequence_id,
            trace_id=self.trace_id,
            span_id=self.span_id,
            parent_id=self.parent_id,
            name=SPAN_NAMES[self.operation],
            kind="CLIENT",
            start_time=self.started,
            end_time=datetime.now(UTC),
            status=SpanStatus(status_code="OK")
            if failure is None
            else SpanStatus(status_code="ERROR", description=failure),
            attributes=attributes,
            source=SOURCE,
        )
        await self.proxy.record(event)

    async def _prompt_ids(self, *, wanted: bool) -> list[int] | None:
        if self.prompt_ids is None:
            return None
        if not wanted:
            self.prompt_ids.cancel()
            return None
        try:
            return await asyncio.wait_for(self.prompt_ids, PROMPT_IDS_WAIT_S)
        except (TimeoutError, asyncio.CancelledError):
            return None


async def _proxy(request: Request, operation: Operation, rollout_id: str | None, attempt_id: str | None) -> Response:
    started = datetime.now(UTC)
    proxy: LLMProxy = request.app.state.llm_proxy
    try:
        body = json_object(await request.body())
        who = await attribute(proxy.pool, named_rollout(rollout_id), attempt_id)
        backend = await proxy.directory.backend(who.resources_id)
        kind = await proxy.directory.kind(backend)
    except ProxyRefused as e:
        return _error(e.http_status, e.error_type, str(e))
    trace_id, parent_id = trace_context(request.headers.get("traceparent"))
    call = _Call(proxy, operation, who, backend, kind, upstream_body(body, backend, kind, operation),
                 trace_id, parent_id, started)  # fmt: skip
    if kind == "llama.cpp":  # asked beside the call, so it adds no latency
        call.prompt_ids = asyncio.create_task(proxy.directory.llama_cpp_prompt_ids(backend, call.body))
    if call.body.get("stream"):
        return await _stream(call)
    return await _whole(call)


async def _whole(call: _Call) -> Response:
    try:
        upstream = await call.proxy.http.post(
            call.url, content=orjson.dumps(call.body), headers=_upstream_headers(call)
        )
    except httpx.HTTPError as e:
        return await _unreachable(call, e)
    exchange: Exchange | None = None
    failure = None if upstream.is_success else f"upstream_error: the backend answered {upstream.status_code}"
    with contextlib.suppress(orjson.JSONDecodeError):
        reply = orjson.loads(upstream.content)
        if isinstance(reply, dict) and upstream.is_success:
            exchange = Exchange()
            exchange.add(reply, delta=False)
    await call.finish(exchange, http_status=upstream.status_code, failure=failure)
    media_type = upstream.headers.get("content-type", "application/json")
    return Response(upstream.content, status_code=upstream.status_code, media_type=media_type, headers=call.headers)


async def _stream(call: _Call) -> Response:
    request = call.proxy.http.build_request(
        "POST", call.url, content=orjson.dumps(call.body), headers=_upstream_headers(call)
    )
    try:
        upstream = await call.proxy.http.send(request, stream=True)
    except httpx.HTTPError as e:
        return await _unreachable(call, e)
    if not upstream.is_success:  # an error is a JSON body, not a stream: relay it whole
        try:
            content = await upstream.aread()
        except httpx.HTTPError as e:
            return await _unreachable(call, e)
        finally:
            await upstream.aclose()
        failure = f"upstream_error: the backend answered {upstream.status_code}"
        await call.finish(None, http_status=upstream.status_code, failure=failure)
        media_type = upstream.headers.get("content-type", "application/json")
        return Response(content, status_code=upstream.status_code, media_type=media_type, headers=call.headers)

    async def finish(exchange: Exchange, failure: str | None) -> None:
        await call.finish(exchange, http_status=upstream.status_code, failure=failure)

    return _RelayedStream(upstream, finish, headers=call.headers)


class _RelayedStream(Response):
    """Relays the backend's event stream chunk by chunk, reading each chunk into the span as it passes, and
    records the span when the stream ends: complete, broken by the backend, left by the client (noticed at
    once, not at the next chunk, and the backend's stream is closed so it stops generating), or cancelled by a
    shutdown."""

    def __init__(
        self,
        upstream: httpx.Response,
        finish: Callable[[Exchange, str | None], Awaitable[None]],
        headers: dict[str, str],
    ) -> None:
        self.status_code = upstream.status_code
        self.media_type = upstream.headers.get("content-type", "text/event-stream")
        self.background = None
        self.init_headers({**headers, "cache-control": "no-cache", "x-accel-buffering": "no"})
        self._upstream = upstream
        self._finish = finish
        self._assembler = ChunkAssembler()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        failure: str | None = "cancelled: the proxy stopped before the stream ended"
        relayed = False
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    nonlocal failure
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    if relayed:  # a server says "disconnect" once the answer is complete, too
                        return
                    chunks = self._assembler.exchange.chunks
                    failure = f"cancelled: the client disconnected after {chunks} chunks"
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                failure = await self._relay(send)
                relayed = True
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()
                await self._finish(self._assembler.close(), failure)

    async def _relay(self, send: Send) -> str | None:
        try:
            async for data in self._upstream.aiter_bytes():
                self._assembler.feed(data)
                await send({"type": "http.response.body", "body": data, "more_body": True})
        except httpx.HTTPError as e:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            kind = "timeout" if isinstance(e, httpx.TimeoutException) else "upstream_error"
            return f"{kind}: the backend's stream broke: {e!r}"
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return None


# -- helpers -------------------------------------------------------------------------------------------------------
def _upstream_headers(call: _Call) -> dict[str, str]:
    # The agent's own Authorization (often a dummy key an OpenAI client insists on) is not forwarded: the key is
    # the resource's.
    return {"content-type": "application/json", **call.backend.headers}


async def _unreachable(call: _Call, error: httpx.HTTPError) -> JSONResponse:
    if isinstance(error, httpx.TimeoutException):
        status, kind, message = 504, "timeout", f"the backend {call.url} did not answer in time ({error!r})"
    else:
        status, kind, message = 502, "upstream_unavailable", f"the backend {call.url} could not be reached ({error!r})"
    await call.finish(None, http_status=None, failure=f"{kind}: {message}")
    return _error(status, kind, message, headers=call.headers)


def _error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "code": status}, "detail": message}
    return JSONResponse(body, status_code=status, headers=headers)
