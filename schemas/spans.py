"""Spans: OpenTelemetry spans of a rollout's attempt. Keyed by rollout_id."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas._base import Event, Frozen, Json
from schemas.bounds import BIGINT_MAX, MAX_ID_LENGTH

SpanKind = Literal["INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
StatusCode = Literal["UNSET", "OK", "ERROR"]


class SpanStatus(Frozen):
    status_code: StatusCode = "UNSET"
    description: str | None = None


class SpanEvent(Frozen):
    name: str
    timestamp: AwareDatetime
    attributes: dict[str, Json] = Field(default_factory=dict)


class SpanLink(Frozen):
    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    span_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    attributes: dict[str, Json] = Field(default_factory=dict)


class SpanRecorded(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["span.recorded"] = "span.recorded"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    attempt_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    sequence_id: int = Field(ge=0, le=BIGINT_MAX, description="total order of the rollout's spans; clocks disagree")
    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    span_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    parent_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")
    name: str
    kind: SpanKind = "INTERNAL"
    start_time: AwareDatetime
    end_time: AwareDatetime | None = None
    status: SpanStatus = SpanStatus()
    attributes: dict[str, Json] = Field(default_factory=dict, description="flat, dotted keys")
    events: tuple[SpanEvent, ...] = ()
    links: tuple[SpanLink, ...] = ()
    resource: dict[str, Json] = Field(default_factory=dict)
