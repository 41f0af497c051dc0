"""Agent Lightning v0.3's wire models, as its ``LightningStoreClient`` sends and parses them (times are float epoch
seconds). Kept apart from our own request models: these follow their shapes, ours follow our events."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from schemas.bounds import ID_PATTERN, Id

RolloutStatusV03 = Literal["queuing", "preparing", "running", "failed", "succeeded", "cancelled", "requeuing"]
AttemptStatusV03 = Literal["preparing", "running", "failed", "succeeded", "unresponsive", "timeout"]
ModeV03 = Literal["train", "val", "test"]


class RolloutConfigV03(BaseModel):
    timeout_seconds: float | None = None
    unresponsive_seconds: float | None = None
    max_attempts: int = Field(default=1, ge=1)
    retry_condition: list[str] = Field(default_factory=list)


class Attempt(BaseModel):
    rollout_id: str
    attempt_id: str
    sequence_id: int
    start_time: float
    end_time: float | None = None
    #: ours adds ``cancelled`` (an attempt ended by a cancel); their client reads it as a plain string
    status: str
    worker_id: str | None = None
    last_heartbeat_time: float | None = None
    metadata: dict[str, Any] | None = None


class Rollout(BaseModel):
    rollout_id: str
    input: Any = None
    start_time: float
    end_time: float | None = None
    mode: ModeV03 | None = None
    resources_id: str | None = None
    status: RolloutStatusV03
    config: RolloutConfigV03 = Field(default_factory=RolloutConfigV03)
    metadata: dict[str, Any] | None = Field(default_factory=dict)


class AttemptedRollout(Rollout):
    attempt: Attempt


class ResourcesUpdate(BaseModel):
    resources_id: str
    create_time: float
    update_time: float
    version: int
    resources: dict[str, dict[str, Any]]


class Worker(BaseModel):
    worker_id: str
    status: Literal["idle", "busy", "unknown"] = "unknown"
    heartbeat_stats: dict[str, Any] | None = None
    last_heartbeat_time: float | None = None
    last_dequeue_time: float | None = None
    last_busy_time: float | None = None
    last_idle_time: float | None = None
    current_rollout_id: str | None = None
    current_attempt_id: str | None = None


class SpanStatusV03(BaseModel):
    status_code: Literal["UNSET", "OK", "ERROR"] = "UNSET"
    description: str | None = None


class Span(BaseModel):
    """Their span (``extra="allow"``, as theirs): unknown fields are accepted and not recorded."""

    model_config = ConfigDict(extra="allow")

    rollout_id: str
    attempt_id: str
    sequence_id: int
    trace_id: str
    span_id: str
    parent_id: str | None = None
    name: str
    status: SpanStatusV03 = Field(default_factory=SpanStatusV03)
    attributes: dict[str, JsonValue] = Field(default_factory=dict)
    events: list[dict[str, Any]] = Field(default_factory=list)
    links: list[dict[str, Any]] = Field(default_factory=list)
    start_time: float | None = None
    end_time: float | None = None
    context: dict[str, Any] | None = None
    parent: dict[str, Any] | None = None
    resource: dict[str, Any] = Field(default_factory=lambda: {"attributes": {}, "schema_url": ""})


class Page(BaseModel):
    items: list[Any]
    limit: int
    offset: int
    total: int


# -- requests ---------------------------------------------------------------------------------------------------
class EnqueueRolloutRequest(BaseModel):
    input: JsonValue = None
    mode: ModeV03 | None = None
    resources_id: str | None = None
    config: RolloutConfigV03 | None = None
    metadata: dict[str, JsonValue] | None = None


class EnqueueManyRequest(BaseModel):
    rollouts: list[EnqueueRolloutRequest] = Field(max_length=1000)


class StartRolloutRequest(EnqueueRolloutRequest):
    worker_id: str | None = Field(default=None, pattern=ID_PATTERN)


class DequeueRequest(BaseModel):
    limit: int = Field(default=1, ge=1, le=100)
    worker_id: str | None = Field(default=None, pattern=ID_PATTERN)


class NextSequenceIdRequest(BaseModel):
    rollout_id: Id
    attempt_id: Id


class NextSequenceIdResponse(BaseModel):
    sequence_id: int


class WaitRequest(BaseModel):
    rollout_ids: list[str] = Field(max_length=10_000)
    timeout: float | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
