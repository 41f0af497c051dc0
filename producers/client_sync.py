"""The blocking SDK client, ``agl.Client``: the commands of :class:`producers.client.AsyncClient`, for scripts and
notebooks, with the same retry policy (see :mod:`producers.client`, which re-exports it).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import BaseModel

from core.tls import default_ssl_context
from producers.client_answers import (
    KnowledgeDocument,
    KnowledgeDocumentsPage,
    KnowledgeSearchAnswer,
    ResourcesAnswer,
    RolloutAnswer,
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
    _register,
    _resources,
    _retry_wait,
    _rewards,
    _rollout_in,
    _search_knowledge,
    _spans,
    _unless_missing,
    _wait,
    _worker_heartbeat,
)
from producers.lifecycle_models import ClaimOut, ReportIn, VerdictOut, WorkerAccepted, WorkerIn
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
    from types import TracebackType

T = TypeVar("T", bound=BaseModel)


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
        api_key: str | None = None,
    ) -> None:
        super().__init__(base_url, retry=retry, correlation_id=correlation_id, api_key=api_key)
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout_s, verify=default_ssl_context())

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
            response: httpx.Response | None = None
            try:
                response = self._http.request(
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
                time.sleep(_retry_wait(self.retry, attempt, response))
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
        return self._send(_Call("POST", "/v1/knowledge/documents", DocumentAccepted, document, _keyed(None)))

    def delete_document(self, collection: str, document_id: str) -> DocumentAccepted:
        return self._send(_delete_document(collection, document_id))

    def assign_rewards(self, rewards: Sequence[RewardIn], *, idempotency_key: str | None = None) -> Accepted:
        return self._send(_rewards(rewards, idempotency_key))

    def record_spans(self, spans: Sequence[SpanIn], *, idempotency_key: str | None = None) -> SpansAccepted:
        return self._send(_spans(spans, idempotency_key))

    # -- the runner protocol ------------------------------------------------------------------------------------
    def register_worker(
        self, worker_id: str, *, capabilities: Sequence[str] = (), slots: int = 1, version: str | None = None
    ) -> WorkerAccepted:
        worker = WorkerIn(worker_id=worker_id, capabilities=tuple(capabilities), slots=slots, version=version)
        return self._send(_register(worker))

    def heartbeat_worker(self, worker_id: str, stats: Mapping[str, Any]) -> WorkerAccepted:
        return self._send(_worker_heartbeat(worker_id, stats))

    def deregister_worker(self, worker_id: str, reason: str | None = None) -> WorkerAccepted:
        return self._send(_deregister(worker_id, reason))

    def dequeue(
        self,
        worker_id: str,
        *,
        limit: int = 1,
        capabilities: Sequence[str] = (),
        wait_ms: int = 0,
        idempotency_key: str | None = None,
    ) -> list[ClaimOut]:
        return self._send(_dequeue(worker_id, limit, capabilities, wait_ms, idempotency_key=idempotency_key)).claims

    def report_running(self, rollout_id: str, attempt_id: str, worker_id: str) -> VerdictOut:
        return self._send(_attempt_report(rollout_id, attempt_id, "running", ReportIn(worker_id=worker_id)))

    def heartbeat_attempt(self, rollout_id: str, attempt_id: str, worker_id: str) -> VerdictOut:
        return self._send(_attempt_report(rollout_id, attempt_id, "heartbeat", ReportIn(worker_id=worker_id)))

    def finish_attempt(
        self, rollout_id: str, attempt_id: str, worker_id: str, status: FinishStatus, error: ErrorInfo | None = None
    ) -> VerdictOut:
        return self._send(_finish(rollout_id, attempt_id, worker_id, status, error))

    def get_resources(self, resources_id: str | None = None) -> ResourcesAnswer | None:
        return _unless_missing(lambda: self._send(_get_resources(resources_id)))

    def get_rollout(self, rollout_id: str) -> RolloutAnswer | None:
        return _unless_missing(lambda: self._send(_get_rollout(rollout_id)))

    def wait_rollouts(self, rollout_ids: Sequence[str], timeout_s: float) -> list[RolloutAnswer]:
        return self._send(_wait(rollout_ids, timeout_s)).rollouts

    def search_knowledge(
        self, query: str, collection: str, *, k: int = 5, mode: str = "hybrid", filter: Mapping[str, Any] | None = None
    ) -> KnowledgeSearchAnswer:
        return self._send(_search_knowledge(query, collection, k, mode, filter))

    def list_documents(
        self, collection: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> KnowledgeDocumentsPage:
        return self._send(_list_documents(collection, limit, offset))

    def get_document(self, document_id: str, collection: str | None = None) -> KnowledgeDocument | None:
        return _unless_missing(lambda: self._send(_get_document(document_id, collection)))
