"""Request and answer bodies of the runner protocol (claims, reports, workers), shared by routes and the SDK."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, model_validator

from producers.models import RewardIn, SpanIn
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
    start: bool = Field(
        default=False,
        description="the claimed attempts are running at once (one decision: claimed, running)",
    )


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


#: Reports per ``POST /v1/workers/{worker_id}/reports``; spans and rewards an attempt's finish may carry.
MAX_REPORTS, MAX_REPORT_SPANS, MAX_REPORT_REWARDS = 1000, 500, 100


class ReportItemIn(_In):
    """One report of a batch: ``running``, ``heartbeat`` or ``finish`` of one attempt.

    A finish may carry the attempt's results (its spans and rewards): they are recorded with the decision, in its
    transaction, once per attempt (a resent finish records them no second time).
    """

    rollout_id: str = Field(pattern=ID_PATTERN)
    attempt_id: str = Field(pattern=ID_PATTERN)
    kind: Literal["running", "heartbeat", "finish"]
    status: Literal["succeeded", "failed"] | None = Field(default=None, description="required with `finish`")
    error: ErrorIn | None = None
    spans: tuple[SpanIn, ...] = Field(default=(), max_length=MAX_REPORT_SPANS)
    rewards: tuple[RewardIn, ...] = Field(default=(), max_length=MAX_REPORT_REWARDS)

    @model_validator(mode="after")
    def _consistent(self) -> ReportItemIn:
        if (self.kind == "finish") != (self.status is not None):
            raise ValueError("`status` goes with a `finish` report, and only with it")
        if (self.spans or self.rewards) and self.kind != "finish":
            raise ValueError("spans and rewards ride on the attempt's `finish` report")
        owners = [(s.rollout_id, s.attempt_id) for s in self.spans] + [
            (r.rollout_id, r.attempt_id) for r in self.rewards
        ]
        if any(rid != self.rollout_id or aid not in (None, self.attempt_id) for rid, aid in owners):
            raise ValueError("a report's spans and rewards belong to its own rollout and attempt")
        return self


class ReportsIn(_In):
    reports: tuple[ReportItemIn, ...] = Field(min_length=1, max_length=MAX_REPORTS)


class ReportError(BaseModel):
    status_code: int = Field(description="what the report alone would have been answered: 404 or 409")
    detail: str


class ReportOut(BaseModel):
    """The verdict on one report (as the single-report routes answer it), or why it was refused."""

    verdict: VerdictOut | None = None
    error: ReportError | None = None


class ReportsOut(BaseModel):
    results: list[ReportOut] = Field(description="one per report, in the order sent")
