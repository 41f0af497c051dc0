"""Spans: OpenTelemetry spans of a rollout's attempt. Keyed by rollout_id."""

from __future__ import annotations

import builtins
from typing import Any, ClassVar, Literal
from uuid import uuid5

from pydantic import AwareDatetime, Field

from schemas._base import Event, Frozen, Json, trusted
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


#: Spans one ``spans.recorded`` event carries at most (an attempt's finish report carries up to 500).
MAX_SPANS_PER_EVENT = 1000


class RecordedSpan(Frozen):
    """One span of a :class:`SpansRecorded`: a ``span.recorded``'s fields less those the batch holds once."""

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


class SpansRecorded(Event):
    """Spans of one attempt recorded together (the spans an attempt's finish report carries): one record where
    ``span.recorded`` takes one per span. It stands for the ``span.recorded`` events :meth:`members` gives, and
    projections that read ``span.recorded`` receive those (see ``Event.member_type``)."""

    key_field: ClassVar[str] = "rollout_id"
    member_type: ClassVar[builtins.type[Event] | None] = SpanRecorded
    type: Literal["spans.recorded"] = "spans.recorded"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    attempt_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    spans: tuple[RecordedSpan, ...] = Field(min_length=1, max_length=MAX_SPANS_PER_EVENT)

    def members(self) -> tuple[SpanRecorded, ...]:
        """The ``span.recorded`` events this one stands for, in order. Each has an id of its own, derived from
        this event's id and the span's place (the same on every decoding), and this event's envelope."""
        shared: dict[str, Any] = {
            "type": "span.recorded",
            "version": 1,
            "occurred_at": self.occurred_at,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "source": self.source,
            "rollout_id": self.rollout_id,
            "attempt_id": self.attempt_id,
        }
        # Every field was validated with this event, under the same constraints: not validated again.
        out = []
        for i, span in enumerate(self.spans):
            values = {"event_id": uuid5(self.event_id, str(i)), **shared, **span.__dict__}
            out.append(trusted(SpanRecorded, {name: values[name] for name in _SPAN_RECORDED_FIELDS}))
        return tuple(out)


#: ``SpanRecorded``'s fields in declaration order (the order its instances hold them in).
_SPAN_RECORDED_FIELDS = tuple(SpanRecorded.model_fields)
