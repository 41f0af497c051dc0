"""Lifecycle decisions: what the one decider of a rollout decided, in the order it decided. Keyed by rollout_id.

Claims, starts, finishes, timeouts, unresponsive attempts, requeues and cancels are decided on the write side,
one rollout at a time (the command API's PostgreSQL write model), and each decision is recorded as one
``rollout.transitioned`` event carrying the decision's number (``seq``) and the statuses it left behind. A read
model takes statuses from these events only, keeping the highest ``seq``: it never re-derives a status from
clocks or from the order between topics, so a rebuild always agrees with the live read model.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas._base import Event

RolloutStatus = Literal["queuing", "preparing", "running", "succeeded", "failed", "cancelled", "requeuing"]
AttemptStatus = Literal["preparing", "running", "succeeded", "failed", "timeout", "unresponsive", "cancelled"]
#: What caused a decision: a claim by a worker, a report of the attempt's runner, the watchdog, or a cancel.
TransitionCause = Literal["claimed", "running", "finished", "timeout", "unresponsive", "cancelled", "late"]

#: Rollout statuses no decision ever leaves.
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class RolloutTransitioned(Event):
    key_field: ClassVar[str] = "rollout_id"
    type: Literal["rollout.transitioned"] = "rollout.transitioned"
    version: Literal[1] = 1
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
