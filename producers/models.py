"""The command API's request and response bodies, shared by the routes and the SDK.

Requests are kept apart from events: an event is what happened (with its envelope), a request is what a
client asks for (ids and versions may be left to the server). Unknown fields are rejected, as in events.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, StringConstraints, field_validator

from schemas.bounds import BIGINT_MAX, MAX_ID_LENGTH, Id
from schemas.bounds import ID_PATTERN as ID_PATTERN  # noqa: PLC0414 - re-exported for the routes
from schemas.resources import Resource
from schemas.rollouts import RolloutConfig, RolloutMode
from schemas.spans import SpanEvent, SpanKind, SpanLink, SpanStatus

_HEX16 = r"^[0-9a-f]{16}$"
_HEX32 = r"^[0-9a-f]{32}$"


class Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RolloutIn(Request):
    """A rollout to enqueue. A client-chosen ``rollout_id`` makes the request safe to retry."""

    rollout_id: Id | None = Field(default=None, description="none = the server picks ro-<hex>")
    input: JsonValue
    mode: RolloutMode | None = None
    resources_id: Id | None = Field(default=None, description="the resources to run with; none = the latest")
    config: RolloutConfig = RolloutConfig()
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000, description="higher runs first")
    required_capabilities: tuple[Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)], ...] = ()


class CancelIn(Request):
    reason: str | None = Field(default=None, max_length=2000)


class ResourcesIn(Request):
    """A new version of a named set of resources; the server assigns the version number."""

    resources_id: Id | None = Field(default=None, description="none = the server picks rs-<hex>")
    resources: dict[str, Resource] = Field(min_length=1)


class DocumentIn(Request):
    """A knowledge document to insert or replace; the server assigns the document version."""

    collection: Id
    document_id: Id | None = Field(default=None, description="none = the server picks doc-<hex>")
    text: str
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    embedding: tuple[float, ...] | None = Field(default=None, min_length=1)
    embedding_model: str | None = None


class RewardIn(Request):
    rollout_id: Id
    attempt_id: Id | None = None
    value: float = Field(allow_inf_nan=False)
    name: str = "reward"
    dimensions: dict[str, float] = Field(default_factory=dict)
    span_id: str | None = Field(default=None, pattern=_HEX16)
    response_id: str | None = Field(default=None, max_length=MAX_ID_LENGTH)


class SpanIn(Request):
    """An OpenTelemetry span of a rollout's attempt. Leave ``sequence_id`` out to have the server number it.

    A rollout's spans should either all carry a sequence id or none: server numbers do not know client ones.
    """

    rollout_id: Id
    attempt_id: Id
    sequence_id: int | None = Field(default=None, ge=0, le=BIGINT_MAX)
    trace_id: str = Field(pattern=_HEX32)
    span_id: str = Field(pattern=_HEX16)
    parent_id: str | None = Field(default=None, pattern=_HEX16)
    name: str
    kind: SpanKind = "INTERNAL"
    start_time: AwareDatetime
    end_time: AwareDatetime | None = None
    status: SpanStatus = SpanStatus()
    attributes: dict[str, JsonValue] = Field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()
    links: tuple[SpanLink, ...] = ()
    resource: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("end_time")
    @classmethod
    def _ends_after_start(cls, value: Any, info: Any) -> Any:
        start = info.data.get("start_time")
        if value is not None and start is not None and value < start:
            raise ValueError("end_time is before start_time")
        return value


# -- answers ----------------------------------------------------------------------------------------------------
class Accepted(BaseModel):
    """202: the events are on the log. ``position`` is accepted by read routes as ``?after=``."""

    event_ids: list[UUID]
    position: str = Field(description="topic:partition:offset[,...] of the events; pass as ?after= to reads")


class RolloutAccepted(BaseModel):
    rollout_id: str
    event_id: UUID
    created: bool = Field(description="false when this rollout already existed (a retried request)")


class RolloutsAccepted(Accepted):
    rollouts: list[RolloutAccepted]


class ResourcesAccepted(Accepted):
    resources_id: str
    resources_version: int


class DocumentAccepted(Accepted):
    document_id: str
    document_version: int | None = Field(default=None, description="none for a deletion")


class SpansAccepted(Accepted):
    sequence_ids: list[int]
