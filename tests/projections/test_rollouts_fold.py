"""The rollout status fold, without I/O: statuses, retries, finality, independence from the order of topics."""

from __future__ import annotations

import itertools

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


def _snapshot(events: list[RolloutEvent]) -> str:
    state = State({}, {})
    fold_all(state, events)
    rows = [*state.rollouts.values(), *state.attempts.values()]
    return repr([sorted(vars(row).items()) for row in rows])


def test_a_copy_of_any_event_of_an_idempotent_type_changes_nothing_wherever_it_lands():
    # The engine tracks no event id for these types (``idempotent_types``): this is what makes that safe.
    cancel = RolloutCancelled(rollout_id="ro-1", occurred_at=at(9))
    history: list[RolloutEvent] = [
        enq(RETRY),
        start(1, 1),
        beat(1, 2),
        end(1, "failed", 3),
        start(2, 4),
        beat(2, 5),
        beat(2, 6),
        cancel,
    ]
    assert all(type(e) in rollouts.PROJECTION.idempotent_types for e in history)
    want = _snapshot(history)
    for i, event in enumerate(history):
        for j in range(i + 1, len(history) + 1):
            assert _snapshot([*history[:j], event, *history[j:]]) == want, (event.type, j)


def test_a_copy_of_an_older_requeue_would_change_the_status_so_requeues_are_deduplicated():
    first = RolloutRequeued(rollout_id="ro-1", after_attempt_id="at-1", occurred_at=at(3))
    second = RolloutRequeued(rollout_id="ro-1", after_attempt_id="at-2", occurred_at=at(6))
    retry3 = RolloutConfig(max_attempts=3, retry_condition=("failed",))
    history: list[RolloutEvent] = [enq(retry3), start(1, 1), end(1, "failed", 2), first, start(2, 4)]
    history += [end(2, "failed", 5), second]
    assert status_of(*history) == "queuing"
    assert status_of(*history, first) == "requeuing"
    assert RolloutRequeued not in rollouts.PROJECTION.idempotent_types
