"""The OpenTelemetry SDK's own span JSON (``ReadableSpan.to_json()``, what v0.1 clients put in a rollout's
``trace``; not OTLP) as our span requests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from producers.models import SpanIn
from schemas.spans import SpanEvent, SpanLink

_KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")


def _hex(value: Any, width: int) -> str:
    text = str(value or "")
    text = text[2:] if text.startswith("0x") else text
    return text.lower().rjust(width, "0")


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _kind(value: Any) -> Any:
    name = str(value or "INTERNAL").rsplit(".", 1)[-1]
    return name if name in _KINDS else "INTERNAL"


def span_request(span: dict[str, Any], rollout_id: str, attempt_id: str) -> SpanIn:
    """One SDK JSON span as a span of ``attempt_id`` (numbered by the server)."""
    context = span.get("context") or {}
    start = _time(span.get("start_time")) or datetime.now(UTC)
    status = span.get("status") or {}
    parent = span.get("parent_id")
    resource = span.get("resource") or {}
    return SpanIn(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        trace_id=_hex(context.get("trace_id"), 32),
        span_id=_hex(context.get("span_id"), 16),
        parent_id=_hex(parent, 16) if parent else None,
        name=str(span.get("name", "")),
        kind=_kind(span.get("kind")),
        start_time=start,
        end_time=_time(span.get("end_time")),
        status={"status_code": status.get("status_code", "UNSET"), "description": status.get("description")},
        attributes=span.get("attributes") or {},
        events=tuple(
            SpanEvent(
                name=str(e.get("name", "")),
                timestamp=_time(e.get("timestamp")) or start,
                attributes=e.get("attributes") or {},
            )
            for e in span.get("events") or []
        ),
        links=tuple(
            SpanLink(
                trace_id=_hex((link.get("context") or {}).get("trace_id"), 32),
                span_id=_hex((link.get("context") or {}).get("span_id"), 16),
                attributes=link.get("attributes") or {},
            )
            for link in span.get("links") or []
        ),
        resource=resource.get("attributes", resource) if isinstance(resource, dict) else {},
    )
