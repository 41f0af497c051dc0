"""Rollouts (v0.1 "tasks"): one run of an agent on one input. Keyed by rollout_id."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas._base import Event, Frozen, Json
from schemas.bounds import INT4_MAX, INT4_MIN, MAX_ID_LENGTH

RolloutMode = Literal["train", "val", "test"]
#: Statuses of an attempt that may end it; a rollout's retry_condition lists which of them allow a retry.
RetryableStatus = Literal["failed", "timeout", "unresponsive"]


class RolloutConfig(Frozen):
    timeout_seconds: float | None = Field(default=None, gt=0, description="from the attempt's start; none = no limit")
    unresponsive_seconds: float | None = Field(
        default=None, gt=0, description="from the last heartbeat (or the start if none)"
    )
    max_attempts: int = Field(default=1, ge=1, description="counts the first attempt")
    retry_condition: tuple[RetryableStatus, ...] = Field(
        default=(), description="attempt statuses that allow a retry; empty = never retry"
    )


class RolloutEnqueued(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["rollout.enqueued"] = "rollout.enqueued"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    input: Json
    mode: RolloutMode | None = None
    resources_id: str | None = Field(
        default=None, max_length=MAX_ID_LENGTH, description="the resources to run with; none = the latest"
    )
    config: RolloutConfig = RolloutConfig()
    metadata: dict[str, Json] = Field(default_factory=dict)
    priority: int = Field(
        default=0, ge=INT4_MIN, le=INT4_MAX, description="higher runs first; FIFO within a priority (an int4)"
    )
    required_capabilities: tuple[str, ...] = Field(default=(), description="a worker must have all of these")


class RolloutCancelled(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["rollout.cancelled"] = "rollout.cancelled"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    reason: str | None = None


class RolloutRequeued(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["rollout.requeued"] = "rollout.requeued"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    after_attempt_id: str | None = Field(
        default=None, max_length=MAX_ID_LENGTH, description="the attempt whose end caused the requeue"
    )
    reason: str | None = None
