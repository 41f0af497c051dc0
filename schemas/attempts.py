"""Attempts: one execution of a rollout by one worker. Keyed by rollout_id, to stay ordered with it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas._base import Event, Frozen, Json

AttemptEndStatus = Literal["succeeded", "failed", "timeout", "unresponsive", "cancelled"]


class ErrorInfo(Frozen):
    type: str
    message: str
    traceback: str | None = None


class AttemptStarted(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["attempt.started"] = "attempt.started"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1)
    attempt_id: str = Field(min_length=1)
    sequence_id: int = Field(ge=1, description="1-based attempt number within the rollout")
    worker_id: str | None = None
    metadata: dict[str, Json] = Field(default_factory=dict)


class AttemptHeartbeat(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["attempt.heartbeat"] = "attempt.heartbeat"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1)
    attempt_id: str = Field(min_length=1)
    worker_id: str | None = None


class AttemptFinished(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["attempt.finished"] = "attempt.finished"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1)
    attempt_id: str = Field(min_length=1)
    status: AttemptEndStatus
    error: ErrorInfo | None = None
