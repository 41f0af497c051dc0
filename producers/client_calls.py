"""The SDK's wire layer: each command as an HTTP call (:class:`_Call`), and what becomes of an answer.

Both clients (:mod:`producers.client`) build the same calls here and differ only in how they send them (awaited
or blocking), so a command's path, body, Idempotency-Key and long-poll timeout are written once. The retry
policy and the reading of an answer (parsed, worth retrying, or a :class:`CommandRejected`) live here too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter

from producers.auth.discovery import auth_headers, find_api_key
from producers.client_answers import (
    KnowledgeDocument,
    KnowledgeDocumentsPage,
    KnowledgeSearchAnswer,
    ResourcesAnswer,
    RolloutAnswer,
    RolloutsAnswer,
)
from producers.errors import ApiUnavailable, CommandRejected
from producers.lifecycle_models import (
    ClaimsOut,
    DequeueIn,
    ErrorIn,
    FinishIn,
    ReportIn,
    ReportItemIn,
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


def _register(worker: WorkerIn) -> _Call[WorkerAccepted]:
    return _Call("POST", "/v1/workers/register", WorkerAccepted, worker)


def _worker_heartbeat(worker_id: str, stats: Mapping[str, Any]) -> _Call[WorkerAccepted]:
    return _Call("POST", f"/v1/workers/{worker_id}/heartbeat", WorkerAccepted, WorkerHeartbeatIn(stats=dict(stats)))


def _deregister(worker_id: str, reason: str | None) -> _Call[WorkerAccepted]:
    return _Call("POST", f"/v1/workers/{worker_id}/deregister", WorkerAccepted, WorkerLeftIn(reason=reason))


#: What a long poll may take beyond the wait it asked for (the answer must still travel back).
_POLL_MARGIN_S = 30.0


def _dequeue(
    worker_id: str,
    limit: int,
    capabilities: Sequence[str],
    wait_ms: int,
    *,
    start: bool = False,
    idempotency_key: str | None = None,
) -> _Call[ClaimsOut]:
    # Keyed as every command: a retry after a lost answer gets the claims the first request made, not more.
    body = DequeueIn(worker_id=worker_id, limit=limit, capabilities=tuple(capabilities), wait_ms=wait_ms, start=start)
    timeout_s = wait_ms / 1000 + _POLL_MARGIN_S
    return _Call("POST", "/v1/rollouts/dequeue", ClaimsOut, body, _keyed(idempotency_key), timeout_s=timeout_s)


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


# -- what both clients share ------------------------------------------------------------------------------------
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
