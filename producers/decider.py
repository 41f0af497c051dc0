"""The rollout lifecycle's decisions, as pure functions: state and request in, new state and events out.

One decider per rollout: the caller holds the rollout's write-model row locked while it decides, so decisions
of one rollout are taken one after another and numbered (``seq``). Every decision that changes anything is
recorded as a ``rollout.transitioned`` event (which carries an attempt's start, end and error; plus
``rollout.requeued`` and ``rollout.cancelled``), and read models apply those decisions instead of re-deciding.
The rules (Agent Lightning's, with its known defects fixed):

- Terminal states (succeeded, failed, cancelled) are final.
- Only the newest attempt decides a non-terminal status; a claim creates the next attempt (``preparing``, or
  ``running`` when the worker starts it at once).
- A failed, timed-out or unresponsive attempt is retried when its status is in ``retry_condition`` and the
  number of attempts created so far is below ``max_attempts``; the rollout is then ``requeuing`` (claimable
  again), else ``failed``.
- A report about an attempt that has already ended (a finish after a timeout, a heartbeat of an unresponsive
  attempt, anything after a terminal state) is a *late* report: recorded, counted on the attempt, and it
  changes no status. Resending the very report that ended an attempt is a duplicate and records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from schemas import (
    TERMINAL_STATUSES,
    ErrorInfo,
    Event,
    RolloutCancelled,
    RolloutConfig,
    RolloutRequeued,
    RolloutTransitioned,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Rollout statuses a worker may claim.
CLAIMABLE: frozenset[str] = frozenset({"queuing", "requeuing"})
#: Attempt statuses of an attempt still at work.
ACTIVE: frozenset[str] = frozenset({"preparing", "running"})
ReportedEnd = Literal["succeeded", "failed"]
Expiry = Literal["timeout", "unresponsive"]


@dataclass(frozen=True)
class RolloutState:
    rollout_id: str
    status: str
    seq: int
    config: RolloutConfig
    attempt_count: int = 0
    latest_attempt_id: str | None = None


@dataclass(frozen=True)
class AttemptState:
    attempt_id: str
    rollout_id: str
    sequence_id: int
    worker_id: str
    status: str
    late_reports: int = 0


@dataclass(frozen=True)
class Verdict:
    """What a runner is told after a report: the statuses now, and whether to stop working on the attempt."""

    rollout_status: str
    attempt_status: str
    #: stop working on it: the rollout is terminal or the attempt has ended (cancelled, timed out, ...)
    cancelled: bool
    #: the report came after the attempt had ended: it was recorded as late and changed nothing
    late: bool = False


@dataclass(frozen=True)
class Decision:
    rollout: RolloutState
    attempt: AttemptState | None
    events: list[Event] = field(default_factory=list)
    verdict: Verdict | None = None


def _transition(
    rollout: RolloutState,
    attempt: AttemptState | None,
    cause: str,
    envelope: dict[str, Any],
    *,
    reported_status: str | None = None,
    reason: str | None = None,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
    error: ErrorInfo | None = None,
) -> RolloutTransitioned:
    return RolloutTransitioned(
        rollout_id=rollout.rollout_id,
        seq=rollout.seq,
        cause=cause,
        status=rollout.status,
        attempt_count=rollout.attempt_count,
        latest_attempt_id=rollout.latest_attempt_id,
        attempt_id=attempt.attempt_id if attempt else None,
        attempt_sequence_id=attempt.sequence_id if attempt else None,
        attempt_status=attempt.status if attempt else None,
        worker_id=attempt.worker_id if attempt else None,
        late_reports=attempt.late_reports if attempt else 0,
        reported_status=reported_status,
        reason=reason,
        attempt_started_at=started_at,
        attempt_ended_at=ended_at,
        attempt_error=error,
        **envelope,
    )


def _verdict(rollout: RolloutState, attempt: AttemptState, *, late: bool = False) -> Verdict:
    stop = rollout.status in TERMINAL_STATUSES or attempt.status not in ACTIVE
    # A succeeded or failed attempt was ended by its own runner: nothing to stop.
    return Verdict(
        rollout.status, attempt.status, cancelled=stop and attempt.status not in ("succeeded", "failed"), late=late
    )


def claim(
    rollout: RolloutState,
    attempt_id: str,
    worker_id: str,
    *,
    envelope: dict[str, Any],
    at: datetime,
    start: bool = False,
) -> Decision:
    """A worker claims a claimable rollout: the next attempt is created, ``preparing``.

    With ``start`` the worker starts it at once: one decision makes the attempt (and the rollout) ``running``.
    """
    assert rollout.status in CLAIMABLE, "claim only claimable rollouts"
    sequence_id = rollout.attempt_count + 1
    status = "running" if start else "preparing"
    attempt = AttemptState(attempt_id, rollout.rollout_id, sequence_id, worker_id, status)
    new = replace(rollout, status=status, seq=rollout.seq + 1, attempt_count=sequence_id, latest_attempt_id=attempt_id)
    return Decision(new, attempt, [_transition(new, attempt, "claimed", envelope, started_at=at)])


def _late(
    rollout: RolloutState, attempt: AttemptState, reported: str, envelope: dict[str, Any], reason: str
) -> Decision:
    late = replace(attempt, late_reports=attempt.late_reports + 1)
    new = replace(rollout, seq=rollout.seq + 1)
    event = _transition(new, late, "late", envelope, reported_status=reported, reason=reason)
    return Decision(new, late, [event], _verdict(new, late, late=True))


def _ended_why(rollout: RolloutState, attempt: AttemptState) -> str:
    if attempt.status not in ACTIVE:
        return f"the attempt had already ended ({attempt.status})"
    return f"the rollout had already ended ({rollout.status})"


def running(rollout: RolloutState, attempt: AttemptState, *, envelope: dict[str, Any]) -> Decision:
    """The attempt's runner says it is working on it."""
    if attempt.status == "running":
        return Decision(rollout, attempt, [], _verdict(rollout, attempt))  # a resend: nothing new
    if attempt.status != "preparing" or rollout.status in TERMINAL_STATUSES:
        return _late(rollout, attempt, "running", envelope, _ended_why(rollout, attempt))
    started = replace(attempt, status="running")
    newest = rollout.latest_attempt_id == attempt.attempt_id
    new = replace(rollout, seq=rollout.seq + 1, status="running" if newest else rollout.status)
    return Decision(new, started, [_transition(new, started, "running", envelope)], _verdict(new, started))


def heartbeat(rollout: RolloutState, attempt: AttemptState, *, envelope: dict[str, Any]) -> Decision:
    """A heartbeat of the attempt. Only the first one after the attempt ended is recorded (as late)."""
    if attempt.status in ACTIVE and rollout.status not in TERMINAL_STATUSES:
        return Decision(rollout, attempt, [], _verdict(rollout, attempt))
    if attempt.late_reports == 0 and attempt.status not in ("succeeded", "failed"):
        return _late(rollout, attempt, "heartbeat", envelope, _ended_why(rollout, attempt))
    return Decision(rollout, attempt, [], _verdict(rollout, attempt))


def _after_end(rollout: RolloutState, attempt: AttemptState) -> tuple[str, list[str]]:
    """The rollout's status once ``attempt`` (already set to its end status) has ended, and why."""
    if rollout.latest_attempt_id != attempt.attempt_id or rollout.status in TERMINAL_STATUSES:
        return rollout.status, []
    if attempt.status == "succeeded":
        return "succeeded", []
    config = rollout.config
    if attempt.status in config.retry_condition and rollout.attempt_count < config.max_attempts:
        return "requeuing", ["requeue"]
    return "failed", []


def _end(
    rollout: RolloutState,
    attempt: AttemptState,
    status: str,
    cause: str,
    *,
    envelope: dict[str, Any],
    at: datetime,
    error: ErrorInfo | None = None,
) -> Decision:
    ended = replace(attempt, status=status)
    rollout_status, extra = _after_end(rollout, ended)
    new = replace(rollout, seq=rollout.seq + 1, status=rollout_status)
    events: list[Event] = [_transition(new, ended, cause, envelope, ended_at=at, error=error)]
    if extra:
        reason = (
            f"attempt {attempt.sequence_id} ended {status}; {rollout.attempt_count} of {rollout.config.max_attempts}"
        )
        events.append(
            RolloutRequeued(
                rollout_id=rollout.rollout_id,
                after_attempt_id=attempt.attempt_id,
                reason=reason,
                occurred_at=at,
                **envelope,
            )
        )
    return Decision(new, ended, events, _verdict(new, ended))


def finish(
    rollout: RolloutState,
    attempt: AttemptState,
    status: ReportedEnd,
    error: ErrorInfo | None,
    *,
    envelope: dict[str, Any],
    at: datetime,
) -> Decision:
    """The attempt's runner reports its outcome."""
    if attempt.status == status:
        return Decision(rollout, attempt, [], _verdict(rollout, attempt))  # the same report again
    if attempt.status not in ACTIVE or rollout.status in TERMINAL_STATUSES:
        return _late(rollout, attempt, status, envelope, _ended_why(rollout, attempt))
    return _end(rollout, attempt, status, "finished", envelope=envelope, at=at, error=error)


def expire(
    rollout: RolloutState, attempt: AttemptState, why: Expiry, *, envelope: dict[str, Any], at: datetime
) -> Decision:
    """The watchdog ends an attempt that ran too long (``timeout``) or stopped reporting (``unresponsive``)."""
    if attempt.status not in ACTIVE:
        return Decision(rollout, attempt, [])
    error = ErrorInfo(type=why, message=f"the attempt was ended by the watchdog: {why}")
    return _end(rollout, attempt, why, why, envelope=envelope, at=at, error=error)


def cancel(
    rollout: RolloutState,
    active: Sequence[AttemptState],
    reason: str | None,
    *,
    envelope: dict[str, Any],
    at: datetime,
) -> Decision:
    """Cancel a rollout; its active attempts end ``cancelled``. A terminal rollout stays as it is."""
    if rollout.status in TERMINAL_STATUSES:
        return Decision(rollout, None, [])
    events: list[Event] = [RolloutCancelled(rollout_id=rollout.rollout_id, reason=reason, occurred_at=at, **envelope)]
    new = rollout
    last: AttemptState | None = None
    for attempt in active:
        new = replace(new, seq=new.seq + 1, status="cancelled")
        last = replace(attempt, status="cancelled")
        events.append(_transition(new, last, "cancelled", envelope, reason=reason, ended_at=at))
    if last is None:
        new = replace(new, seq=new.seq + 1, status="cancelled")
        events.append(_transition(new, None, "cancelled", envelope, reason=reason))
    return Decision(new, last, events)
