"""Finished OpenTelemetry SDK spans as ``SpanIn`` requests, as the runner posts them to ``POST /v1/spans``.

Spans keep their own OTel trace and span ids, so a batch resent after a lost answer names the same spans. Values
the API would refuse as hostile input (NaN or infinite floats, NUL characters, lone surrogates) are made safe
here rather than failing the attempt's report: an instrumentation's odd attribute must not cost the whole trace.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from opentelemetry.trace import format_span_id, format_trace_id

from producers.models import SpanIn
from schemas.spans import SpanEvent, SpanLink, SpanStatus

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from opentelemetry.sdk.trace import ReadableSpan
    from pydantic import JsonValue

ROLLOUT_ID = "agentlightning.rollout_id"
ATTEMPT_ID = "agentlightning.attempt_id"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def nanos_to_datetime(nanos: int) -> datetime:
    """An OTel timestamp (integer ns since the epoch) as an aware datetime, exact to the microsecond."""
    return _EPOCH + timedelta(microseconds=nanos // 1000)


def safe_value(value: Any) -> JsonValue:
    """An attribute value the API accepts: finite numbers, clean strings, lists of them (OTel gives tuples)."""
    if isinstance(value, str):
        text: str = value.replace("\x00", "\ufffd")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            text = text.encode("utf-8", "replace").decode("utf-8")
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [safe_value(item) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return cast("JsonValue", value)
    return safe_value(str(value))


def safe_attributes(attributes: Mapping[str, Any] | None) -> dict[str, JsonValue]:
    return {str(safe_value(key)): safe_value(value) for key, value in (attributes or {}).items()}


def span_in(span: ReadableSpan, rollout_id: str, attempt_id: str) -> SpanIn:
    """The request that records ``span`` for the attempt; its resource names the attempt as Agent Lightning's does."""
    context = span.get_span_context()
    assert context is not None, "an SDK span always has a context"
    start = nanos_to_datetime(span.start_time or 0)
    end = nanos_to_datetime(span.end_time) if span.end_time is not None else None
    resource = safe_attributes(span.resource.attributes) | {ROLLOUT_ID: rollout_id, ATTEMPT_ID: attempt_id}
    return SpanIn(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        trace_id=format_trace_id(context.trace_id),
        span_id=format_span_id(context.span_id),
        parent_id=format_span_id(span.parent.span_id) if span.parent is not None else None,
        name=str(safe_value(span.name)),
        kind=span.kind.name,  # the SDK's SpanKind names are the schema's literals
        start_time=start,
        end_time=max(end, start) if end is not None else None,
        status=SpanStatus(status_code=span.status.status_code.name, description=span.status.description),
        attributes=safe_attributes(span.attributes),
        events=tuple(
            SpanEvent(name=e.name, timestamp=nanos_to_datetime(e.timestamp), attributes=safe_attributes(e.attributes))
            for e in span.events
        ),
        links=tuple(
            SpanLink(
                trace_id=format_trace_id(link.context.trace_id),
                span_id=format_span_id(link.context.span_id),
                attributes=safe_attributes(link.attributes),
            )
            for link in span.links
        ),
        resource=resource,
    )


#: A span batch's JSON stays under this, half the API's default body limit (8 MiB): chatty LLM spans with long
#: token-id lists would otherwise make a 500-span batch too large and be refused (413), failing the attempt.
MAX_BATCH_BYTES = 4 * 1024 * 1024


def batches(spans: Sequence[SpanIn], max_count: int, max_bytes: int = MAX_BATCH_BYTES) -> list[list[SpanIn]]:
    """``spans`` in order, cut into batches of at most ``max_count`` spans and about ``max_bytes`` of JSON.

    The cut depends on the spans alone, so a report resent after a lost answer makes the same batches (and
    keys). A span larger than ``max_bytes`` goes alone.
    """
    cut: list[list[SpanIn]] = []
    batch: list[SpanIn] = []
    size = 0
    for span in spans:
        span_size = len(span.model_dump_json())
        if batch and (len(batch) >= max_count or size + span_size > max_bytes):
            cut.append(batch)
            batch, size = [], 0
        batch.append(span)
        size += span_size
    if batch:
        cut.append(batch)
    return cut
