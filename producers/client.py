"""The Python SDK of the command API: ``agl.AsyncClient`` and ``agl.Client`` (the same commands, blocking).

Both retry what may succeed later -- connection errors, timeouts, 5xx answers -- with exponential backoff, and
never a 4xx answer (:class:`CommandRejected` carries the API's explanation). Enqueueing sends an
Idempotency-Key (one per call unless given), so a retry after a lost answer returns the same rollouts and never
enqueues twins. Retried spans or rewards may arrive twice; their consumers deduplicate by span and event id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx
import orjson
from pydantic import BaseModel, TypeAdapter

from producers.errors import ApiUnavailable, CommandRejected
from producers.models import (
    Accepted,
    CancelIn,
    DocumentAccepted,
    DocumentIn,
    ResourcesAccepted,
    ResourcesIn,
    RewardIn,
    RolloutIn,
    RolloutsAccepted,
    SpanIn,
    SpansAccepted,
)
from schemas import RolloutConfig

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

    from schemas import Resource, RolloutMode

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` counts the first try; waits grow from ``backoff_s`` by doubling, up to ``max_backoff_s``."""

    attempts: int = 5
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One command as HTTP: what to send and what a 2xx answer parses into."""

    method: str
    path: str
    answer: type[T]
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    def content(self) -> bytes | None:
        if self.body is None:
            return None
        if isinstance(self.body, list):
            return orjson.dumps([item.model_dump(mode="json") for item in self.body])
        data: bytes = orjson.dumps(self.body.model_dump(mode="json"))
        return data


def _outcome(call: _Call[T], response: httpx.Response) -> T | None:
    """The parsed answer; None for an answer worth retrying (5xx); raises for 4xx."""
    if response.status_code >= 500:
        return None
    if response.status_code >= 400:
        try:
            detail: Any = response.json().get("message") or response.json().get("detail")
        except ValueError:
            detail = response.text
        raise CommandRejected(response.status_code, detail)
    return call.answer.model_validate_json(response.content)


# -- the commands, as calls (shared by both clients) ------------------------------------------------------------
_ROLLOUTS = TypeAdapter(list[RolloutIn])


def _rollout_in(
    input: Any,
    *,
    rollout_id: str | None,
    mode: RolloutMode | None,
    resources_id: str | None,
    config: RolloutConfig | None,
    metadata: Mapping[str, Any] | None,
    priority: int,
    required_capabilities: Sequence[str],
) -> RolloutIn:
    """The one-rollout request both clients send (their keyword arguments, validated)."""
    return RolloutIn(
        input=input,
        rollout_id=rollout_id,
        mode=mode,
        resources_id=resources_id,
        config=config or RolloutConfig(),
        metadata=dict(metadata or {}),
        priority=priority,
        required_capabilities=tuple(required_capabilities),
    )


def _enqueue(rollouts: Sequence[RolloutIn], idempotency_key: str | None) -> _Call[RolloutsAccepted]:
    key = idempotency_key or f"sdk-{uuid.uuid4().hex}"
    return _Call("POST", "/v1/rollouts", RolloutsAccepted, list(rollouts), {"Idempotency-Key": key})


def _cancel(rollout_id: str, reason: str | None) -> _Call[Accepted]:
    return _Call("POST", f"/v1/rollouts/{rollout_id}/cancel", Accepted, CancelIn(reason=reason))


def _resources(resources: Mapping[str, Resource], resources_id: str | None) -> _Call[ResourcesAccepted]:
    body = ResourcesIn(resources_id=resources_id, resources=dict(resources))
    return _Call("POST", "/v1/resources", ResourcesAccepted, body)


def _delete_document(collection: str, document_id: str) -> _Call[DocumentAccepted]:
    path = f"/v1/knowledge/documents/{document_id}"
    return _Call("DELETE", path, DocumentAccepted, params={"collection": collection})


class _Base:
    def __init__(self, base_url: str, *, retry: RetryPolicy | None, correlation_id: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._headers = {"content-type": "application/json"}
        if correlation_id:
            self._headers["X-Correlation-ID"] = correlation_id

    def _unavailable(self, call: _Call[Any], last: object) -> ApiUnavailable:
        return ApiUnavailable(
            f"{call.method} {self.base_url}{call.path}: no answer after {self.retry.attempts} attempts ({last})"
        )


class AsyncClient(_Base):
    """The command API, asynchronously. Use ``async with AsyncClient(url) as client`` or call ``aclose()``.

    Raises (every command): :class:`CommandRejected` on a 4xx answer, :class:`ApiUnavailable` when the retry
    budget is spent on connection errors or 5xx answers.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        correlation_id: str | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, retry=retry, correlation_id=correlation_id)
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        last: object = None
        for attempt in range(1, self.retry.attempts + 1):
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    content=call.content(),
                    params=call.params,
                    headers=self._headers | call.headers,
                )
            except httpx.TransportError as e:
                last = repr(e)
            else:
                answer = _outcome(call, response)
                if answer is not None:
                    return answer
                last = f"{response.status_code} {response.text[:200]}"
            if attempt < self.retry.attempts:
                await asyncio.sleep(self.retry.delay(attempt))
        raise self._unavailable(call, last)

    async def enqueue_rollout(
        self,
        input: Any,
        *,
        rollout_id: str | None = None,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: Mapping[str, Any] | None = None,
        priority: int = 0,
        required_capabilities: Sequence[str] = (),
    ) -> RolloutsAccepted:
        """Enqueue one rollout. A ``rollout_id`` of your own makes the call safe to repeat (no twin, ever)."""
        rollout = _rollout_in(
            input, rollout_id=rollout_id, mode=mode, resources_id=resources_id, config=config,
            metadata=metadata, priority=priority, required_capabilities=required_capabilities,
        )  # fmt: skip
        return await self._send(_enqueue([rollout], None))

    async def enqueue_rollouts(
        self, rollouts: Sequence[RolloutIn | Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> RolloutsAccepted:
        """Enqueue many rollouts in one request (one Idempotency-Key covers them all)."""
        return await self._send(_enqueue(_ROLLOUTS.validate_python(list(rollouts)), idempotency_key))

    async def cancel_rollout(self, rollout_id: str, reason: str | None = None) -> Accepted:
        return await self._send(_cancel(rollout_id, reason))

    async def publish_resources(
        self, resources: Mapping[str, Resource], *, resources_id: str | None = None
    ) -> ResourcesAccepted:
        """Publish the next version of ``resources_id`` (a new id when none is given)."""
        return await self._send(_resources(resources, resources_id))

    async def upsert_document(self, document: DocumentIn) -> DocumentAccepted:
        """Insert or replace a document; the answer carries its new ``document_version``."""
        return await self._send(_Call("POST", "/v1/knowledge/documents", DocumentAccepted, document))

    async def delete_document(self, collection: str, document_id: str) -> DocumentAccepted:
        return await self._send(_delete_document(collection, document_id))

    async def assign_rewards(self, rewards: Sequence[RewardIn]) -> Accepted:
        """Assign rewards (to rollouts, attempts, spans or LLM responses) in one request."""
        return await self._send(_Call("POST", "/v1/rewards", Accepted, list(rewards)))

    async def record_spans(self, spans: Sequence[SpanIn]) -> SpansAccepted:
        """Record a batch of spans; the answer lists their sequence ids."""
        return await self._send(_Call("POST", "/v1/spans", SpansAccepted, list(spans)))


class Client(_Base):
    """The command API, blocking: the same commands as :class:`AsyncClient`, for scripts and notebooks."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        correlation_id: str | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, retry=retry, correlation_id=correlation_id)
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        last: object = None
        for attempt in range(1, self.retry.attempts + 1):
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    content=call.content(),
                    params=call.params,
                    headers=self._headers | call.headers,
                )
            except httpx.TransportError as e:
                last = repr(e)
            else:
                answer = _outcome(call, response)
                if answer is not None:
                    return answer
                last = f"{response.status_code} {response.text[:200]}"
            if attempt < self.retry.attempts:
                time.sleep(self.retry.delay(attempt))
        raise self._unavailable(call, last)

    def enqueue_rollout(
        self,
        input: Any,
        *,
        rollout_id: str | None = None,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: Mapping[str, Any] | None = None,
        priority: int = 0,
        required_capabilities: Sequence[str] = (),
    ) -> RolloutsAccepted:
        rollout = _rollout_in(
            input, rollout_id=rollout_id, mode=mode, resources_id=resources_id, config=config,
            metadata=metadata, priority=priority, required_capabilities=required_capabilities,
        )  # fmt: skip
        return self._send(_enqueue([rollout], None))

    def enqueue_rollouts(
        self, rollouts: Sequence[RolloutIn | Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> RolloutsAccepted:
        return self._send(_enqueue(_ROLLOUTS.validate_python(list(rollouts)), idempotency_key))

    def cancel_rollout(self, rollout_id: str, reason: str | None = None) -> Accepted:
        return self._send(_cancel(rollout_id, reason))

    def publish_resources(
        self, resources: Mapping[str, Resource], *, resources_id: str | None = None
    ) -> ResourcesAccepted:
        return self._send(_resources(resources, resources_id))

    def upsert_document(self, document: DocumentIn) -> DocumentAccepted:
        return self._send(_Call("POST", "/v1/knowledge/documents", DocumentAccepted, document))

    def delete_document(self, collection: str, document_id: str) -> DocumentAccepted:
        return self._send(_delete_document(collection, document_id))

    def assign_rewards(self, rewards: Sequence[RewardIn]) -> Accepted:
        return self._send(_Call("POST", "/v1/rewards", Accepted, list(rewards)))

    def record_spans(self, spans: Sequence[SpanIn]) -> SpansAccepted:
        return self._send(_Call("POST", "/v1/spans", SpansAccepted, list(spans)))
