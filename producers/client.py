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
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter

from producers.auth.discovery import auth_headers, find_api_key
from producers.errors import ApiUnavailable, CommandRejected
from producers.lifecycle_models import (
    ClaimOut,
    ClaimsOut,
    DequeueIn,
    ErrorIn,
    FinishIn,
    ReportIn,
    ReportItemIn,
    ReportOut,
    ReportsIn,
    ReportsOut,
    VerdictOut,
    WorkerAccepted,
    WorkerHeartbeatIn,
    WorkerIn,
    WorkerLeftIn,
)
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
from schemas import ErrorInfo, Resource, RolloutConfig, RolloutMode

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType

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
    #: A long poll's own timeout (its wait plus a margin); None = the client's timeout.
    timeout_s: float | None = None

    def timeout(self) -> float | httpx._client.UseClientDefault:
        return httpx.USE_CLIENT_DEFAULT if self.timeout_s is None else self.timeout_s

    def content(self) -> bytes | None:
        if self.body is None or isinstance(self.body, bytes):  # bytes: a body encoded by the caller
            return self.body
        if isinstance(self.body, list):
            return orjson.dumps([item.model_dump(mode="json") for item in self.body])
        data: bytes = orjson.dumps(self.body.model_dump(mode="json"))
        return data


#: The longest Retry-After a client honours, in seconds (a larger one is treated as this).
MAX_RETRY_AFTER_S = 60.0


def _outcome(call: _Call[T], response: httpx.Response) -> T | None:
    """The parsed answer; None for an answer worth retrying (5xx, 429 rate limited); raises for other 4xx."""
    if response.status_code >= 500 or response.status_code == 429:
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


def _retry_wait(retry: RetryPolicy, attempt: int, response: httpx.Response | None) -> float:
    """The policy's backoff, or longer when the server said when to come back (Retry-After in seconds)."""
    wait = retry.delay(attempt)
    after = response.headers.get("retry-after", "") if response is not None else ""
    try:
        return max(wait, min(float(after), MAX_RETRY_AFTER_S)) if after else wait
    except ValueError:  # an HTTP date: rare from our API; the backoff is as good
        return wait


def _resources(resources: Mapping[str, Resource], resources_id: str | None) -> _Call[ResourcesAccepted]:
    body = ResourcesIn(resources_id=resources_id, resources=dict(resources))
    return _Call("POST", "/v1/resources", ResourcesAccepted, body, _keyed(None))


def _delete_document(collection: str, document_id: str) -> _Call[DocumentAccepted]:
    path = f"/v1/knowledge/documents/{document_id}"
    return _Call("DELETE", path, DocumentAccepted, headers=_keyed(None), params={"collection": collection})


def _keyed(key: str | None) -> dict[str, str]:
    """Every command carries an Idempotency-Key (one per call unless given), reused by the call's retries: a retry
    after a lost answer is answered with the first request's events and never publishes a twin."""
    return {"Idempotency-Key": key or f"sdk-{uuid.uuid4().hex}"}


def _rewards(rewards: Sequence[RewardIn], idempotency_key: str | None) -> _Call[Accepted]:
    return _Call("POST", "/v1/rewards", Accepted, list(rewards), _keyed(idempotency_key))


def _spans(spans: Sequence[SpanIn], idempotency_key: str | None) -> _Call[SpansAccepted]:
    return _Call("POST", "/v1/spans", SpansAccepted, list(spans), _keyed(idempotency_key))


# -- the runner protocol: workers, claims and attempt reports ----------------------------------------------------
FinishStatus = Literal["succeeded", "failed"]


class WaitIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rollout_ids: list[str]
    timeout_s: float


class ResourcesAnswer(BaseModel):
    resources_id: str
    resources_version: int
    resources: dict[str, Resource]


class RolloutAnswer(BaseModel):
    """A rollout as the read routes answer it; fields the SDK does not name are kept as extra fields."""

    model_config = ConfigDict(extra="allow")

    rollout_id: str
    status: str


class RolloutsAnswer(BaseModel):
    rollouts: list[RolloutAnswer]


def _register(worker: WorkerIn) -> _Call[WorkerAccepted]:
    return _Call("POST", "/v1/workers/register", WorkerAccepted, worker)


def _worker_heartbeat(worker_id: str, stats: Mapping[str, Any]) -> _Call[WorkerAccepted]:
    return _Call("POST", f"/v1/workers/{worker_id}/heartbeat", WorkerAccepted, WorkerHeartbeatIn(stats=dict(stats)))


def _deregister(worker_id: str, reason: str | None) -> _Call[WorkerAccepted]:
    return _Call("POST", f"/v1/workers/{worker_id}/deregister", WorkerAccepted, WorkerLeftIn(reason=reason))


#: What a long poll may take beyond the wait it asked for (the answer must still travel back).
_POLL_MARGIN_S = 30.0


def _dequeue(
    worker_id: str, limit: int, capabilities: Sequence[str], wait_ms: int, start: bool = False
) -> _Call[ClaimsOut]:
    body = DequeueIn(worker_id=worker_id, limit=limit, capabilities=tuple(capabilities), wait_ms=wait_ms, start=start)
    return _Call("POST", "/v1/rollouts/dequeue", ClaimsOut, body, timeout_s=wait_ms / 1000 + _POLL_MARGIN_S)


def _attempt_report(rollout_id: str, attempt_id: str, report: str, body: ReportIn) -> _Call[VerdictOut]:
    return _Call("POST", f"/v1/rollouts/{rollout_id}/attempts/{attempt_id}/{report}", VerdictOut, body)


def _finish(
    rollout_id: str, attempt_id: str, worker_id: str, status: FinishStatus, error: ErrorInfo | None
) -> _Call[VerdictOut]:
    error_in = None if error is None else ErrorIn(**error.model_dump())
    body = FinishIn(worker_id=worker_id, status=status, error=error_in)
    return _attempt_report(rollout_id, attempt_id, "finish", body)


def _reports(worker_id: str, reports: Sequence[ReportItemIn] | Sequence[bytes]) -> _Call[ReportsOut]:
    """Reports as models, or each already encoded as JSON (a batcher that measures them encodes them once)."""
    if all(isinstance(r, bytes) for r in reports):
        body: Any = b'{"reports":[' + b",".join(cast("Sequence[bytes]", reports)) + b"]}"
    else:
        body = ReportsIn(reports=tuple(cast("Sequence[ReportItemIn]", reports)))
    return _Call("POST", f"/v1/workers/{worker_id}/reports", ReportsOut, body)


def _get_resources(resources_id: str | None) -> _Call[ResourcesAnswer]:
    return _Call("GET", f"/v1/resources/{resources_id or 'latest'}", ResourcesAnswer)


def _get_rollout(rollout_id: str) -> _Call[RolloutAnswer]:
    return _Call("GET", f"/v1/rollouts/{rollout_id}", RolloutAnswer)


def _wait(rollout_ids: Sequence[str], timeout_s: float) -> _Call[RolloutsAnswer]:
    body = WaitIn(rollout_ids=list(rollout_ids), timeout_s=timeout_s)
    return _Call("POST", "/v1/rollouts/wait", RolloutsAnswer, body, timeout_s=timeout_s + _POLL_MARGIN_S)


class KnowledgeHit(BaseModel):
    """A chunk found by ``search_knowledge``; fields the SDK does not name are kept as extra fields."""

    model_config = ConfigDict(extra="allow")

    document_id: str
    document_version: int
    chunk_index: int
    text: str
    score: float


class KnowledgeSearchAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_id: str | None
    hits: list[KnowledgeHit]


class KnowledgeDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    collection: str
    document_id: str
    latest_version: int
    indexed_version: int | None


class KnowledgeDocumentsPage(BaseModel):
    items: list[KnowledgeDocument]
    total: int


def _search_knowledge(
    query: str, collection: str, k: int, mode: str, filter: Mapping[str, Any] | None
) -> _Call[KnowledgeSearchAnswer]:
    params = {"q": query, "collection": collection, "k": str(k), "mode": mode}
    if filter:
        params["filter"] = orjson.dumps(dict(filter)).decode()
    return _Call("GET", "/v1/knowledge/search", KnowledgeSearchAnswer, params=params)


def _list_documents(collection: str | None, limit: int, offset: int) -> _Call[KnowledgeDocumentsPage]:
    params = {"limit": str(limit), "offset": str(offset)} | ({"collection": collection} if collection else {})
    return _Call("GET", "/v1/knowledge/documents", KnowledgeDocumentsPage, params=params)


def _get_document(document_id: str, collection: str | None) -> _Call[KnowledgeDocument]:
    params = {"collection": collection} if collection else {}
    return _Call("GET", f"/v1/knowledge/documents/{document_id}", KnowledgeDocument, params=params)


class _ContextIn(BaseModel):
    model_config = ConfigDict(extra="allow")


def _record_context(rollout_id: str, attempt_id: str, context: Mapping[str, Any]) -> _Call[Accepted]:
    path = f"/v1/rollouts/{rollout_id}/attempts/{attempt_id}/context"
    return _Call("POST", path, Accepted, _ContextIn(**context), _keyed(None))


def _unless_missing(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except CommandRejected as e:
        if e.status_code == 404:
            return None
        raise


class _Base:
    def __init__(
        self, base_url: str, *, retry: RetryPolicy | None, correlation_id: str | None, api_key: str | None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        # The API key: the one given, else AGL_API_KEY, else the one `agl up` saved (producers/auth/discovery.py).
        self._headers = {"content-type": "application/json", **auth_headers(find_api_key(api_key))}
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
        api_key: str | None = None,
    ) -> None:
        super().__init__(base_url, retry=retry, correlation_id=correlation_id, api_key=api_key)
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
    ) -> list[ClaimOut]:
        """Claim up to ``limit`` rollouts; with nothing to claim, the API holds the answer up to ``wait_ms``.
        ``start``: the attempts are ``running`` from the claim on (no ``report_running`` needed)."""
        return (await self._send(_dequeue(worker_id, limit, capabilities, wait_ms, start))).claims

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
        self, worker_id: str, *, limit: int = 1, capabilities: Sequence[str] = (), wait_ms: int = 0
    ) -> list[ClaimOut]:
        return self._send(_dequeue(worker_id, limit, capabilities, wait_ms)).claims

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
