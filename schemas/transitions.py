"""Lifecycle decisions: what the one decider of a rollout decided, in the order it decided. Keyed by rollout_id.

Claims, starts, finishes, timeouts, unresponsive attempts, requeues and cancels are decided on the write side,
one rollout at a time (the command API's PostgreSQL write model), and each decision is recorded as one
``rollout.transitioned`` event carrying the decision's number (``seq``) and the statuses it left behind. A read
model takes statuses from these events only, keeping the highest ``seq``: it never re-derives a status from
clocks or from the order between topics, so a rebuild always agrees with the live read model.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas._base import Event
from schemas.attempts import ErrorInfo

RolloutStatus = Literal["queuing", "preparing", "running", "succeeded", "failed", "cancelled", "requeuing"]
AttemptStatus = Literal["preparing", "running", "succeeded", "failed", "timeout", "unresponsive", "cancelled"]
#: What caused a decision: a claim by a worker, a report of the attempt's runner, the watchdog, or a cancel.
TransitionCause = Literal["claimed", "running", "finished", "timeout", "unresponsive", "cancelled", "late"]

#: Rollout statuses no decision ever leaves.
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class RolloutTransitioned(Event):
    """One decision. Version 2 also carries the attempt facts the decision makes (when the claim started the
    attempt; when and with what error its end ended it), which version 1 recorded as separate ``attempt.started``
    and ``attempt.finished`` events: two events fewer per attempt on the log (three with a claim that starts its
    attempt, which is now one decision).
    """

    key_field: ClassVar[str] = "rollout_id"
    type: Literal["rollout.transitioned"] = "rollout.transitioned"
    version: Literal[2] = 2
    rollout_id: str = Field(min_length=1, max_length=200)
    seq: int = Field(ge=1, le=2_147_483_647, description="the decision's number within the rollout, from 1")
    cause: TransitionCause
    status: RolloutStatus = Field(description="the rollout's status after the decision")
    attempt_count: int = Field(ge=0, le=2_147_483_647, description="attempts created so far")
    latest_attempt_id: str | None = Field(default=None, max_length=200)
    attempt_id: str | None = Field(default=None, max_length=200, description="the attempt the decision is about")
    attempt_sequence_id: int | None = Field(default=None, ge=1, le=2_147_483_647)
    attempt_status: AttemptStatus | None = Field(default=None, description="that attempt's status after it")
    worker_id: str | None = Field(default=None, max_length=200)
    late_reports: int = Field(
        default=0, ge=0, le=2_147_483_647, description="reports of that attempt that came after it had ended"
    )
    reported_status: str | None = Field(
        default=None, max_length=40, description="for a late report: what the runner reported (changes nothing)"
    )
    reason: str | None = Field(default=None, max_length=2000)
    attempt_started_at: AwareDatetime | None = Field(
        default=None, description="on the claim that created the attempt: when it started"
    )
    attempt_ended_at: AwareDatetime | None = Field(
        default=None, description="on the decision that ended the attempt: when it ended"
    )
    attempt_error: ErrorInfo | None = Field(default=None, description="on that decision: the attempt's error")

    @staticmethod
    def upcast_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
        # A v1 decision came with its own attempt.started / attempt.finished events: it carries none of the facts.
        return data
