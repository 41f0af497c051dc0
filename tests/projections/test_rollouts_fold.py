"""The rollouts fold, without I/O: it applies the decider's decisions, whatever the order between topics, and a
copy of any event changes nothing."""

from __future__ import annotations

import itertools

from producers import decider
from producers.decider import AttemptState
from projections import rollouts
from projections.rollouts import RolloutEvent, State, fold_all
from schemas import (
    TOPIC_BY_EVENT,
    AttemptFinished,
    AttemptStarted,
    RolloutCancelled,
    RolloutConfig,
    RolloutTransitioned,
    TopicSpec,
)
from schemas.codec import decode_dict
from schemas.topics import ATTEMPTS, ROLLOUTS
from tests.fixtures.histories import History, at, history

RETRY = RolloutConfig(max_attempts=2, retry_condition=("failed", "timeout"))


def folded(events: list[RolloutEvent]) -> State:
    state = State({}, {})
    fold_all(state, events)
    return state


def status_of(h: History) -> str:
    return folded(h.events).rollouts[h.rollout_id].status  # type: ignore[arg-type]


def test_the_statuses_are_the_decided_ones():
    h = history("ro-1")
    assert status_of(h) == "queuing"
    assert status_of(h.claim()) == "preparing"
    assert status_of(h.running()) == "running"
    assert status_of(h.finish("succeeded")) == "succeeded"
    state = folded(h.events)  # type: ignore[arg-type]
    (attempt,) = state.attempts.values()
    assert (attempt.status, attempt.sequence_id, attempt.worker_id) == ("succeeded", 1, "w1")
    row = state.rollouts["ro-1"]
    assert (row.attempt_count, row.latest_attempt_id, row.decision_seq) == (1, attempt.attempt_id, 3)
    assert row.start_time == at(1) and row.end_time == at(3)


def test_retries_follow_the_decisions():
    h = history("ro-1", RETRY).claim().running().finish("failed")
    assert status_of(h) == "requeuing"
    assert status_of(h.claim()) == "preparing"
    assert status_of(h.running().finish("failed")) == "failed"  # the second attempt was the last allowed
    state = folded(h.events)  # type: ignore[arg-type]
    assert sorted((a.sequence_id, a.status) for a in state.attempts.values()) == [(1, "failed"), (2, "failed")]
    assert state.rollouts["ro-1"].requeued_after == "at-ro-1-1"


def test_a_late_report_is_visible_on_its_attempt_and_changes_no_status():
    h = history("ro-1", RETRY).claim().running().expire("timeout").claim().running().finish("succeeded")
    assert h.state is not None
    # The first attempt's runner reports success after the watchdog timed it out.
    old = AttemptState("at-ro-1-1", "ro-1", 1, "w1", "timeout")
    decision = decider.finish(h.state, old, "succeeded", None, envelope={}, at=at(99))
    assert decision.verdict is not None and decision.verdict.late and decision.verdict.cancelled
    state = folded([*h.events, *decision.events])  # type: ignore[list-item]
    attempts = {a.attempt_id: a for a in state.attempts.values()}
    assert attempts["at-ro-1-1"].status == "timeout" and attempts["at-ro-1-1"].late_reports == 1
    assert attempts["at-ro-1-2"].status == "succeeded"
    assert state.rollouts["ro-1"].status == "succeeded" and state.rollouts["ro-1"].attempt_count == 2


def test_the_result_does_not_depend_on_the_order_between_topics():
    h = history("ro-1", RETRY).claim().running().heartbeat().finish("failed").claim().running().finish("succeeded")
    on_rollouts = [e for e in h.events if _topic(e) is ROLLOUTS]
    on_attempts = [e for e in h.events if _topic(e) is ATTEMPTS]
    assert len(on_rollouts) + len(on_attempts) == len(h.events)
    results = set()
    n = len(h.events)
    for positions in itertools.islice(itertools.combinations(range(n), len(on_rollouts)), 0, None, 37):
        r, a = iter(on_rollouts), iter(on_attempts)
        merged = [next(r) if i in positions else next(a) for i in range(n)]
        results.add(_snapshot(merged))  # type: ignore[arg-type]
    assert len(results) == 1
    assert "'succeeded'" in results.pop()


def _topic(event: object) -> TopicSpec:
    return TOPIC_BY_EVENT[type(event)]  # type: ignore[index]


def test_decisions_applied_in_reverse_give_the_same_rows():
    h = history("ro-1", RETRY).claim().running().finish("failed").claim().running().finish("succeeded")
    decisions = [e for e in h.events if isinstance(e, RolloutTransitioned)]
    others = [e for e in h.events if not isinstance(e, RolloutTransitioned)]
    assert _snapshot([*others, *reversed(decisions)]) == _snapshot(h.events)  # type: ignore[list-item,arg-type]


def _snapshot(events: list[RolloutEvent]) -> str:
    state = folded(events)
    rows = [*state.rollouts.values(), *sorted(state.attempts.values(), key=lambda a: a.attempt_id)]
    return repr([sorted(vars(row).items()) for row in rows])


def test_a_copy_of_any_event_changes_nothing_wherever_it_lands():
    # The engine tracks no event id for this projection (every type is in ``idempotent_types``): this is why.
    h = history("ro-1", RETRY).claim().running().heartbeat().finish("failed").claim().running().cancel("stop")
    events: list[RolloutEvent] = h.events  # type: ignore[assignment]
    assert all(type(e) in rollouts.PROJECTION.idempotent_types for e in events)
    assert rollouts.PROJECTION.idempotent_types == rollouts.PROJECTION.event_types
    want = _snapshot(events)
    assert "'cancelled'" in want
    for i, event in enumerate(events):
        for j in range(len(events) + 1):
            if j != i:
                assert _snapshot([*events[:j], event, *events[j:]]) == want, (event.type, j)


def test_a_cancel_or_an_attempt_event_alone_never_sets_a_status():
    # Statuses come from decisions only: a cancel stamped early, or an attempt's end, re-decide nothing.
    h = history("ro-1").claim().running().finish("succeeded")
    early_cancel = RolloutCancelled(rollout_id="ro-1", occurred_at=at(0.5))
    stray_end = AttemptFinished(rollout_id="ro-1", attempt_id="at-ro-1-1", status="failed", occurred_at=at(0.7))
    state = folded([early_cancel, stray_end, *h.events])  # type: ignore[list-item]
    assert state.rollouts["ro-1"].status == "succeeded"
    assert state.attempts["at-ro-1-1"].status == "succeeded"


def _as_v1(events: list[object]) -> list[object]:
    """The same history as version 1 recorded it: an attempt's start and end as events of their own."""
    out: list[object] = []
    for e in events:
        if isinstance(e, RolloutTransitioned) and e.attempt_id is not None:
            if e.attempt_started_at is not None:
                out.append(
                    AttemptStarted(
                        rollout_id=e.rollout_id,
                        attempt_id=e.attempt_id,
                        sequence_id=e.attempt_sequence_id or 1,
                        worker_id=e.worker_id,
                        occurred_at=e.attempt_started_at,
                    )
                )
            if e.attempt_ended_at is not None:
                out.append(
                    AttemptFinished(
                        rollout_id=e.rollout_id,
                        attempt_id=e.attempt_id,
                        status=e.attempt_status,
                        error=e.attempt_error,
                        occurred_at=e.attempt_ended_at,
                    )
                )
            v1 = e.model_dump(mode="json", exclude={"attempt_started_at", "attempt_ended_at", "attempt_error"})
            out.append(decode_dict({**v1, "version": 1}))  # upcast as a record of a v1 log would be
        else:
            out.append(e)
    return out


def _rows(events: list[object]) -> list[object]:
    state = folded(events)  # type: ignore[arg-type]
    rows = [*state.rollouts.values(), *sorted(state.attempts.values(), key=lambda a: a.attempt_id)]
    return [sorted(vars(row).items()) for row in rows]


def test_a_log_written_before_version_2_folds_to_the_same_rows():
    # Version 2 decisions carry the attempt's start, end and error; a log from before carries them as
    # attempt.started / attempt.finished. A rebuild over either must give the same rollouts and attempts.
    h = history("ro-1", RETRY).claim().running().heartbeat().finish("failed").claim().running().expire("timeout")
    c = history("ro-2", RETRY).claim().running().cancel("stop")
    v2: list[object] = [*h.events, *c.events]
    v1 = _as_v1(v2)
    assert sum(isinstance(e, (AttemptStarted, AttemptFinished)) for e in v1) == 6
    # Compared as values: the decoded v1 decision's times carry pydantic's UTC object, equal but printed otherwise.
    assert _rows(v1) == _rows(v2)
    attempts = folded(v2).attempts  # type: ignore[arg-type]
    first, second = attempts["at-ro-1-1"], attempts["at-ro-1-2"]
    assert (first.start_time, first.end_time, first.error) == (at(1), at(4), None)
    assert second.end_time == at(7) and second.error is not None and second.error["type"] == "timeout"
    assert attempts["at-ro-2-1"].status == "cancelled" and attempts["at-ro-2-1"].end_time is not None
