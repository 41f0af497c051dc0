"""Request and answer bodies of the runner protocol (claims, reports, workers), shared by routes and the SDK."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from schemas.bounds import ID_PATTERN, MAX_ID_LENGTH

#: Worker ids end up in URL paths: the project's one bounded id alphabet.
NAME_PATTERN = ID_PATTERN
#: A capability, bounded as a rollout's ``required_capabilities`` are, so a claim can always compare them.
Capability = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkerIn(_In):
    worker_id: str = Field(pattern=NAME_PATTERN)
    capabilities: tuple[Capability, ...] = Field(default=(), max_length=100)
    slots: int = Field(default=1, ge=1, le=10_000)
    version: str | None = Field(
        default=None, max_length=100, description="accepted, not yet recorded (worker.registered v2 is planned)"
    )


class WorkerHeartbeatIn(_In):
    stats: dict[str, JsonValue] = Field(default_factory=dict)


class WorkerLeftIn(_In):
    reason: str | None = Field(default=None, max_length=2000)


class DequeueIn(_In):
    worker_id: str = Field(pattern=NAME_PATTERN)
    limit: int = Field(default=1, ge=1, le=100)
    capabilities: tuple[Capability, ...] = Field(default=(), max_length=100)
    wait_ms: int = Field(default=0, ge=0, le=30_000, description="long-poll this long when nothing is claimable")


class ReportIn(_In):
    worker_id: str = Field(pattern=NAME_PATTERN)


class ErrorIn(_In):
    type: str = Field(max_length=500)
    message: str = Field(max_length=20_000)
    traceback: str | None = Field(default=None, max_length=200_000)


class FinishIn(ReportIn):
    status: Literal["succeeded", "failed"]
    error: ErrorIn | None = None


class ClaimOut(BaseModel):
    rollout_id: str
    attempt_id: str
    sequence_id: int
    input: Any = None
    mode: str | None = None
    resources_id: str | None = None
    config: dict[str, Any]
    metadata: dict[str, Any]


class ClaimsOut(BaseModel):
    claims: list[ClaimOut]


class VerdictOut(BaseModel):
    rollout_status: str
    attempt_status: str
    cancelled: bool = Field(description="stop working on this attempt (rollout cancelled or attempt ended)")
    late: bool = Field(description="the report came after the attempt had ended: recorded as late, changed nothing")


class WorkerAccepted(BaseModel):
    worker_id: str
