"""The rollout status fold, without I/O: statuses, retries, finality, independence from the order of topics."""

from __future__ import annotations

import itertools

import pytest

from projections import rollouts
from projections.rollouts import RolloutEvent, State, fold_all
from schemas import (
    AttemptEndStatus,
    AttemptFinished,
    AttemptHeartbeat,
    AttemptStarted,
    RolloutCancelled,
    RolloutConfig,
    RolloutEnqueued,
    RolloutRequeued,
)
from tests.consumers.helpers import at

RETRY = RolloutConfig(max_attempts=2, retry_condition=("failed", "timeout"))


def status_of(*events: RolloutEvent) -> str:
    state = State({}, {})
    fold_all(state, list(events))
    (row,) = state.rollouts.values()
    return row.status


DEFAULT = RolloutConfig()


def enq(config: RolloutConfig = DEFAULT, t: float = 0) -> RolloutEnqueued:
    return RolloutEnqueued(rollout_id="ro-1", input=1, config=config, occurred_at=at(t))


def start(n: int, t: float) -> AttemptStarted:
    return AttemptStarted(rollout_id="ro-1", attempt_id=f"at-{n}", sequence_id=n, occurred_at=at(t))


def beat(n: int, t: float) -> AttemptHeartbeat:
    return AttemptHeartbeat(rollout_id="ro-1", attempt_id=f"at-{n}", occurred_at=at(t))


def end(n: int, status: AttemptEndStatus, t: float) -> AttemptFinished:
    return AttemptFinished(rollout_id="ro-1", attempt_id=f"at-{n}", status=status, occurred_at=at(t))


def test_the_happy_path_goes_queuing_preparing_running_succeeded():
    assert status_of(enq()) == "queuing"
    assert status_of(enq(), start(1, 1)) == "preparing"
    assert status_of(enq(), start(1, 1), beat(1, 2)) == "running"
    assert status_of(enq(), start(1, 1), beat(1, 2), end(1, "succeeded", 3)) == "succeeded"


def test_a_failure_is_retried_only_per_retry_condition_and_max_attempts():
    assert status_of(enq(), start(1, 1), end(1, "failed", 2)) == "failed"
    assert status_of(enq(RETRY), start(1, 1), end(1, "failed", 2)) == "requeuing"
    assert status_of(enq(RETRY), start(1, 1), end(1, "unresponsive", 2)) == "failed"  # not in retry_condition
    requeued = RolloutRequeued(rollout_id="ro-1", after_attempt_id="at-1", occurred_at=at(3))
    assert status_of(enq(RETRY), start(1, 1), end(1, "failed", 2), requeued) == "queuing"
    # The second attempt is the last one allowed (max_attempts=2): its failure is final.
    assert status_of(enq(RETRY), start(1, 1), end(1, "timeout", 2), requeued, start(2, 4), end(2, "failed", 5)) == (
        "failed"
    )
    assert status_of(enq(RETRY), start(1, 1), end(1, "failed", 2), start(2, 4), end(2, "succeeded", 5)) == "succeeded"


def test_terminal_states_are_final():
    cancel_late = RolloutCancelled(rollout_id="ro-1", occurred_at=at(10))
    assert status_of(enq(), start(1, 1), end(1, "succeeded", 2), cancel_late) == "succeeded"
    cancel_early = RolloutCancelled(rollout_id="ro-1", occurred_at=at(1.5))
    assert status_of(enq(), start(1, 1), end(1, "succeeded", 2), cancel_early) == "cancelled"
    # A late attempt on a succeeded rollout, and a late second result of an ended attempt, change nothing.
    assert status_of(enq(), start(1, 1), end(1, "succeeded", 2), start(2, 3), beat(2, 4)) == "succeeded"
    assert status_of(enq(RETRY), start(1, 1), end(1, "timeout", 2), end(1, "succeeded", 3)) == "requeuing"


def test_only_the_newest_attempt_decides():
    assert status_of(enq(RETRY), start(1, 1), end(1, "failed", 2), start(2, 3), beat(2, 4)) == "running"


def test_the_result_does_not_depend_on_the_order_between_topics():
    rollout_topic: list[RolloutEvent] = [
        enq(RETRY),
        RolloutRequeued(rollout_id="ro-1", after_attempt_id="at-1", occurred_at=at(3)),
    ]
    attempt_topic: list[RolloutEvent] = [start(1, 1), end(1, "failed", 2), start(2, 4), beat(2, 5)]
    results = set()
    # Every interleaving that keeps each topic's own order.
    for positions in itertools.combinations(range(6), 2):
        r, a = iter(rollout_topic), iter(attempt_topic)
        merged: list[RolloutEvent] = [next(r) if i in positions else next(a) for i in range(6)]
        state = State({}, {})
        fold_all(state, merged)
        results.add(tuple(sorted(vars(state.rollouts["ro-1"]).items(), key=lambda kv: kv[0])).__repr__())
    assert len(results) == 1
    assert "'running'" in results.pop()


def test_integers_an_int4_column_cannot_hold_are_rejected_before_binary_copy():
    # psycopg's binary int4 dumper would truncate 2**40 to 0 without a word; apply must fail (and park) instead.
    cols = ["rollout_id", "priority", "attempt_count"]
    rollouts._check_int4(cols, [("ro-1", 2**31 - 1, None), ("ro-2", -(2**31), 0)])
    with pytest.raises(ValueError, match=r"priority=1099511627776 is out of range"):
        rollouts._check_int4(cols, [("ro-1", 2**40, 1)])
