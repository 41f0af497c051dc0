"""Unattached traces: OpenTelemetry spans that name no rollout and attempt. Keyed by trace_id.

The OTLP receiver (``POST /v1/traces``) keeps a span without ``agentlightning.rollout_id`` and
``agentlightning.attempt_id`` (as span or resource attributes) instead of dropping it, as Agent Lightning does:
a foreign instrumentation's trace is still a fact worth keeping, and a later tool may attach it to a rollout.
Such spans go to their own topic, keyed by ``trace_id``, so one trace stays ordered in one partition and the
spans topic keeps its ``rollout_id`` key contract.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas._base import Event, Json
from schemas.bounds import MAX_ID_LENGTH
from schemas.spans import SpanEvent, SpanKind, SpanLink, SpanStatus


class SpanUnattached(Event):
    key_field: ClassVar[str] = "trace_id"
    type: Literal["trace.span_unattached"] = "trace.span_unattached"
    version: Literal[1] = 1
    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    span_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    parent_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")
    rollout_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_ID_LENGTH, description="when only one of the two ids was given"
    )
    attempt_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_ID_LENGTH, description="when only one of the two ids was given"
    )
    name: str
    kind: SpanKind = "INTERNAL"
    start_time: AwareDatetime
    end_time: AwareDatetime | None = None
    status: SpanStatus = SpanStatus()
    attributes: dict[str, Json] = Field(default_factory=dict, description="flat, dotted keys")
    events: tuple[SpanEvent, ...] = ()
    links: tuple[SpanLink, ...] = ()
    resource: dict[str, Json] = Field(default_factory=dict)
