"""Attempts: one execution of a rollout by one worker. Keyed by rollout_id, to stay ordered with it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas._base import Event, Frozen, Json
from schemas.bounds import INT4_MAX, MAX_ID_LENGTH

AttemptEndStatus = Literal["succeeded", "failed", "timeout", "unresponsive", "cancelled"]


class ErrorInfo(Frozen):
    type: str
    message: str
    traceback: str | None = None


class AttemptStarted(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["attempt.started"] = "attempt.started"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    attempt_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    sequence_id: int = Field(ge=1, le=INT4_MAX, description="1-based attempt number within the rollout")
    worker_id: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    metadata: dict[str, Json] = Field(default_factory=dict)


class AttemptHeartbeat(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["attempt.heartbeat"] = "attempt.heartbeat"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    attempt_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    worker_id: str | None = Field(default=None, max_length=MAX_ID_LENGTH)


class AttemptFinished(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["attempt.finished"] = "attempt.finished"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    attempt_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    status: AttemptEndStatus
    error: ErrorInfo | None = None
