"""The Python SDK of the command API: ``agl.AsyncClient`` and ``agl.Client`` (the same commands, blocking).

Both retry what may succeed later -- connection errors, timeouts, 5xx answers -- with exponential backoff, and
never a 4xx answer (:class:`CommandRejected` carries the API's explanation). Enqueueing sends an
Idempotency-Key (one per call unless given), so a retry after a lost answer returns the same rollouts and never
enqueues twins. Retried spans or rewards may arrive twice; their consumers deduplicate by span and event id.

Each command is built once as an HTTP call in :mod:`producers.client_calls`; what the read commands answer is
in :mod:`producers.client_answers`; the blocking client is in :mod:`producers.client_sync`. The clients, the
answers and the retry policy are re-exported here: callers import from this module only.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import BaseModel

from core.tls import default_ssl_context
from producers.client_answers import (
    KnowledgeDocument,
    KnowledgeDocumentsPage,
    KnowledgeHit,
    KnowledgeSearchAnswer,
    ResourcesAnswer,
    RolloutAnswer,
    RolloutsAnswer,
)
from producers.client_calls import (
    _ROLLOUTS,
    FinishStatus,
    RetryPolicy,
    _attempt_report,
    _Base,
    _Call,
    _cancel,
    _delete_document,
    _dequeue,
    _deregister,
    _enqueue,
    _finish,
    _get_document,
    _get_resources,
    _get_rollout,
    _keyed,
    _list_documents,
    _outcome,
    _record_context,
    _register,
    _reports,
    _resources,
    _retry_wait,
    _rewards,
    _rollout_in,
    _search_knowledge,
    _spans,
    _wait,
    _worker_heartbeat,
)
from producers.client_sync import Client
from producers.errors import CommandRejected
from producers.lifecycle_models import ClaimOut, ReportIn, ReportItemIn, ReportOut, VerdictOut, WorkerAccepted, WorkerIn
from producers.models import (
    Accepted,
    DocumentAccepted,
    DocumentIn,
    ResourcesAccepted,
    RewardIn,
    RolloutIn,
    RolloutsAccepted,
    SpanIn,
    SpansAccepted,
)
from schemas import ErrorInfo, Resource, RolloutConfig, RolloutMode

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# What other code imports from here: the clients, and the policy and answers of their signatures.
__all__ = [
    "AsyncClient",
    "Client",
    "FinishStatus",
    "KnowledgeDocument",
    "KnowledgeDocumentsPage",
    "KnowledgeHit",
    "KnowledgeSearchAnswer",
    "ResourcesAnswer",
    "RetryPolicy",
    "RolloutAnswer",
    "RolloutsAnswer",
]

T = TypeVar("T", bound=BaseModel)


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
        api_key: str | None = None,
    ) -> None:
        super().__init__(base_url, retry=retry, correlation_id=correlation_id, api_key=api_key)
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, verify=default_ssl_context())

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        last: object = None
        for attempt in range(1, self.retry.attempts + 1):
            response: httpx.Response | None = None
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    content=call.content(),
                    params=call.params,
                    headers=self._headers | call.headers,
                    timeout=call.timeout(),
                )
            except httpx.TransportError as e:
                last = repr(e)
            else:
                answer = _outcome(call, response)
                if answer is not None:
                    return answer
                last = f"{response.status_code} {response.text[:200]}"
            if attempt < self.retry.attempts:
                await asyncio.sleep(_retry_wait(self.retry, attempt, response))
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
        return await self._send(_Call("POST", "/v1/knowledge/documents", DocumentAccepted, document, _keyed(None)))

    async def delete_document(self, collection: str, document_id: str) -> DocumentAccepted:
        return await self._send(_delete_document(collection, document_id))

    async def assign_rewards(self, rewards: Sequence[RewardIn], *, idempotency_key: str | None = None) -> Accepted:
        """Assign rewards (to rollouts, attempts, spans or LLM responses) in one request.

        ``idempotency_key`` names this batch: resending it (after a lost answer) sends the same key.
        """
        return await self._send(_rewards(rewards, idempotency_key))

    async def record_spans(self, spans: Sequence[SpanIn], *, idempotency_key: str | None = None) -> SpansAccepted:
        """Record a batch of spans; the answer lists their sequence ids."""
        return await self._send(_spans(spans, idempotency_key))

    # -- the runner protocol ------------------------------------------------------------------------------------
    async def register_worker(
        self, worker_id: str, *, capabilities: Sequence[str] = (), slots: int = 1, version: str | None = None
    ) -> WorkerAccepted:
        worker = WorkerIn(worker_id=worker_id, capabilities=tuple(capabilities), slots=slots, version=version)
        return await self._send(_register(worker))

    async def heartbeat_worker(self, worker_id: str, stats: Mapping[str, Any]) -> WorkerAccepted:
        return await self._send(_worker_heartbeat(worker_id, stats))

    async def deregister_worker(self, worker_id: str, reason: str | None = None) -> WorkerAccepted:
        return await self._send(_deregister(worker_id, reason))

    async def dequeue(
        self,
        worker_id: str,
        *,
        limit: int = 1,
        capabilities: Sequence[str] = (),
        wait_ms: int = 0,
        start: bool = False,
        idempotency_key: str | None = None,
    ) -> list[ClaimOut]:
        """Claim up to ``limit`` rollouts; with nothing to claim, the API holds the answer up to ``wait_ms``.
        ``start``: the attempts are ``running`` from the claim on (no ``report_running`` needed). A call that
        raised ApiUnavailable, made again with its ``idempotency_key``, answers the claims it may have made."""
        call = _dequeue(worker_id, limit, capabilities, wait_ms, start=start, idempotency_key=idempotency_key)
        return (await self._send(call)).claims

    async def report_many(self, worker_id: str, reports: Sequence[ReportItemIn] | Sequence[bytes]) -> list[ReportOut]:
        """Many reports of ``worker_id``'s attempts in one request and one transaction; an answer per report.
        Each report is a :class:`ReportItemIn` or its JSON encoding."""
        return (await self._send(_reports(worker_id, reports))).results

    async def report_running(self, rollout_id: str, attempt_id: str, worker_id: str) -> VerdictOut:
        return await self._send(_attempt_report(rollout_id, attempt_id, "running", ReportIn(worker_id=worker_id)))

    async def heartbeat_attempt(self, rollout_id: str, attempt_id: str, worker_id: str) -> VerdictOut:
        body = ReportIn(worker_id=worker_id)
        return await self._send(_attempt_report(rollout_id, attempt_id, "heartbeat", body))

    async def finish_attempt(
        self, rollout_id: str, attempt_id: str, worker_id: str, status: FinishStatus, error: ErrorInfo | None = None
    ) -> VerdictOut:
        return await self._send(_finish(rollout_id, attempt_id, worker_id, status, error))

    async def get_resources(self, resources_id: str | None = None) -> ResourcesAnswer | None:
        """The resources ``resources_id`` (none = the latest); None when there are none."""
        try:
            return await self._send(_get_resources(resources_id))
        except CommandRejected as e:
            if e.status_code == 404:
                return None
            raise

    async def get_rollout(self, rollout_id: str) -> RolloutAnswer | None:
        try:
            return await self._send(_get_rollout(rollout_id))
        except CommandRejected as e:
            if e.status_code == 404:
                return None
            raise

    async def wait_rollouts(self, rollout_ids: Sequence[str], timeout_s: float) -> list[RolloutAnswer]:
        """Those of ``rollout_ids`` that are terminal, answered as soon as all are or when ``timeout_s`` ends."""
        return (await self._send(_wait(rollout_ids, timeout_s))).rollouts

    async def search_knowledge(
        self, query: str, collection: str, *, k: int = 5, mode: str = "hybrid", filter: Mapping[str, Any] | None = None
    ) -> KnowledgeSearchAnswer:
        """Chunks of ``collection`` matching ``query`` (``mode``: hybrid, vector or text; ``filter``: metadata)."""
        return await self._send(_search_knowledge(query, collection, k, mode, filter))

    async def record_context(self, rollout_id: str, attempt_id: str, context: Mapping[str, Any]) -> Accepted:
        """Record what an attempt's agent was given from the knowledge base (see ``knowledge.context``)."""
        return await self._send(_record_context(rollout_id, attempt_id, context))

    async def list_documents(
        self, collection: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> KnowledgeDocumentsPage:
        return await self._send(_list_documents(collection, limit, offset))

    async def get_document(self, document_id: str, collection: str | None = None) -> KnowledgeDocument | None:
        try:
            return await self._send(_get_document(document_id, collection))
        except CommandRejected as e:
            if e.status_code == 404:
                return None
            raise
