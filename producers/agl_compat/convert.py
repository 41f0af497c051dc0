"""Conversions between our rows and events and Agent Lightning v0.3's wire models (pure functions).

Where our model says more than theirs can parse, the answer is narrowed to what their client accepts: an attempt
ended by a cancel (ours: ``cancelled``) reads ``failed`` to them; a worker that deregistered reads ``unknown``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from producers.agl_compat.models import Attempt, AttemptedRollout, ResourcesUpdate, Rollout, Span, Worker
from producers.models import SpanIn
from schemas.spans import SpanEvent, SpanLink

if TYPE_CHECKING:
    from projections.resources import ResourcesVersion
    from projections.rollouts import AttemptRow, RolloutRow
    from projections.workers import WorkerView

_CONFIG_KEYS = ("timeout_seconds", "unresponsive_seconds", "max_attempts", "retry_condition")
#: Our attempt statuses their ``AttemptStatus`` lacks, and what they read instead.
_ATTEMPT_STATUS = {"cancelled": "failed"}


def epoch(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def from_epoch(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def config_out(raw: Any) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    return {k: raw[k] for k in _CONFIG_KEYS if k in raw}


def attempt_status(status: str) -> str:
    return _ATTEMPT_STATUS.get(status, status)


def attempt_out(row: AttemptRow, *, fallback_start: datetime | None = None) -> Attempt:
    start = row.start_time or fallback_start
    return Attempt(
        rollout_id=row.rollout_id,
        attempt_id=row.attempt_id,
        sequence_id=row.sequence_id or 0,
        start_time=epoch(start) or 0.0,
        end_time=epoch(row.end_time),
        status=attempt_status(row.status),
        worker_id=row.worker_id,
        last_heartbeat_time=epoch(row.last_heartbeat_time),
        metadata=row.metadata if isinstance(row.metadata, dict) and row.metadata else None,
    )


def rollout_out(row: RolloutRow, latest: AttemptRow | None = None) -> Rollout | AttemptedRollout:
    """Their ``Rollout`` (``start_time`` is when it was enqueued), or ``AttemptedRollout`` with its newest attempt."""
    fields: dict[str, Any] = {
        "rollout_id": row.rollout_id,
        "input": row.input,
        "start_time": epoch(row.enqueued_at or row.start_time) or 0.0,
        "end_time": epoch(row.end_time),
        "mode": row.mode,
        "resources_id": row.resources_id,
        "status": row.status,
        "config": config_out(row.config),
        "metadata": row.metadata if isinstance(row.metadata, dict) else {},
    }
    if latest is None:
        return Rollout(**fields)
    return AttemptedRollout(**fields, attempt=attempt_out(latest, fallback_start=row.start_time))


def resource_out(resource: dict[str, Any]) -> dict[str, Any]:
    """One resource as theirs: an LLM carries ``api_key`` (always null: keys never enter our log)."""
    if resource.get("resource_type") in ("llm", "proxy_llm"):
        out = {k: v for k, v in resource.items() if k != "api_key_ref"}
        out["api_key"] = None
        out.setdefault("sampling_parameters", {})
        return out
    return dict(resource)


def resource_in(resource: Any) -> Any:
    """One of their resources as ours. An ``api_key`` is dropped: the log is kept forever, so a secret never goes
    into it (runners read their keys from their environment)."""
    if isinstance(resource, dict) and resource.get("resource_type") in ("llm", "proxy_llm"):
        return {k: v for k, v in resource.items() if k != "api_key"}
    return resource


def resources_out(version: ResourcesVersion) -> ResourcesUpdate:
    created = version.created_at.timestamp()
    return ResourcesUpdate(
        resources_id=version.resources_id,
        create_time=created,
        update_time=created,
        version=version.resources_version,
        resources={name: resource_out(r) for name, r in version.resources.items()},
    )


def worker_out(view: WorkerView) -> Worker:
    attempts = list(view.attempts or [])
    return Worker(
        worker_id=view.worker_id,
        status=view.status if view.status in ("idle", "busy") else "unknown",
        heartbeat_stats=view.stats if isinstance(view.stats, dict) else None,
        last_heartbeat_time=epoch(view.last_heartbeat_at),
        current_attempt_id=attempts[0] if attempts else None,
    )


# -- spans ------------------------------------------------------------------------------------------------------
def span_in(span: Span) -> SpanIn:
    """Their span as our span request (its ``sequence_id`` kept). A missing start time is the end time, else now."""
    start = from_epoch(span.start_time) or from_epoch(span.end_time) or datetime.now(UTC)
    events = tuple(
        SpanEvent(
            name=str(e.get("name", "")),
            timestamp=from_epoch(e.get("timestamp")) or start,
            attributes=e.get("attributes") or {},
        )
        for e in span.events
    )
    links = tuple(
        SpanLink(
            trace_id=str((link.get("context") or {}).get("trace_id", "")),
            span_id=str((link.get("context") or {}).get("span_id", "")),
            attributes=link.get("attributes") or {},
        )
        for link in span.links
    )
    return SpanIn(
        rollout_id=span.rollout_id,
        attempt_id=span.attempt_id,
        sequence_id=span.sequence_id,
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_id=span.parent_id,
        name=span.name,
        start_time=start,
        end_time=from_epoch(span.end_time),
        status={"status_code": span.status.status_code, "description": span.status.description},
        attributes=span.attributes,
        events=events,
        links=links,
        resource=span.resource,
    )


def span_out(row: dict[str, Any]) -> Span:
    """A row of the spans read model as their span."""
    resource = row.get("resource") or {}
    if "attributes" not in resource:
        resource = {"attributes": resource, "schema_url": ""}
    return Span(
        rollout_id=row["rollout_id"],
        attempt_id=row["attempt_id"],
        sequence_id=row["sequence_id"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        parent_id=row.get("parent_id"),
        name=row["name"],
        status={"status_code": row.get("status_code") or "UNSET", "description": row.get("status_description")},
        attributes=row.get("attributes") or {},
        events=[
            {"name": e.get("name"), "attributes": e.get("attributes") or {}, "timestamp": _seconds(e.get("timestamp"))}
            for e in row.get("events") or []
        ],
        links=[
            {
                "context": {
                    "trace_id": link.get("trace_id"),
                    "span_id": link.get("span_id"),
                    "is_remote": False,
                    "trace_state": {},
                },
                "attributes": link.get("attributes") or None,
            }
            for link in row.get("links") or []
        ],
        start_time=epoch(row.get("start_time")),
        end_time=epoch(row.get("end_time")),
        resource=resource,
    )


def _seconds(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    return float(value) if isinstance(value, int | float) else None
