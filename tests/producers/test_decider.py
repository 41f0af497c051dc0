"""The lifecycle decider's rules, without I/O: each decision numbered once, terminal states final, retries counted,
late reports recorded and harmless, resends recording nothing."""

from __future__ import annotations

from typing import Any

from producers import decider
from producers.decider import AttemptState, RolloutState
from schemas import RolloutConfig, RolloutTransitioned
from tests.fixtures.histories import at, history

RETRY = RolloutConfig(max_attempts=2, retry_condition=("failed", "timeout", "unresponsive"))


def decisions(events: list[Any]) -> list[RolloutTransitioned]:
    return [e for e in events if isinstance(e, RolloutTransitioned)]


def test_each_decision_is_numbered_once_in_order():
    h = history("ro-1", RETRY).claim().running().finish("failed").claim().running().finish("succeeded")
    seqs = [d.seq for d in decisions(h.events)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [d.status for d in decisions(h.events)] == [
        "preparing",
        "running",
        "requeuing",
        "preparing",
        "running",
        "succeeded",
    ]
    assert [e.type for e in h.events].count("rollout.requeued") == 1


def test_a_cancel_after_success_changes_nothing():
    h = history("ro-1").claim().running().finish("succeeded")
    before = len(h.events)
    h.cancel("too late")
    assert len(h.events) == before and h.state is not None and h.state.status == "succeeded"


def test_a_cancel_ends_the_active_attempt_and_is_final():
    h = history("ro-1", RETRY).claim().running().cancel("stop")
    assert h.state is not None and h.state.status == "cancelled"
    assert h.attempt is not None and h.attempt.status == "cancelled"
    late = decider.finish(h.state, h.attempt, "succeeded", None, envelope={}, at=at(50))
    assert late.rollout.status == "cancelled" and late.verdict is not None and late.verdict.late
    (event,) = late.events
    assert isinstance(event, RolloutTransitioned) and event.cause == "late" and event.status == "cancelled"


def test_retries_are_counted_not_read_from_sequence_ids():
    # max_attempts=2: the second failure is final, whatever the attempts call themselves.
    h = history("ro-1", RETRY).claim().running().expire("unresponsive").claim().running().finish("failed")
    assert h.state is not None and (h.state.status, h.state.attempt_count) == ("failed", 2)
    no_retry = history("ro-2", RolloutConfig(max_attempts=3, retry_condition=("failed",))).claim().expire("timeout")
    assert no_retry.state is not None and no_retry.state.status == "failed"  # timeout is not in retry_condition


def test_a_late_finish_of_a_timed_out_attempt_is_recorded_once_per_report_and_changes_no_status():
    h = history("ro-1", RETRY).claim().running().expire("timeout")
    assert h.state is not None and h.attempt is not None and h.state.status == "requeuing"
    late = decider.finish(h.state, h.attempt, "succeeded", None, envelope={}, at=at(50))
    assert late.rollout.status == "requeuing" and late.attempt is not None
    assert (late.attempt.status, late.attempt.late_reports) == ("timeout", 1)
    assert late.verdict is not None and late.verdict.late and late.verdict.cancelled


def test_resending_the_report_that_ended_an_attempt_records_nothing():
    h = history("ro-1").claim().running().finish("succeeded")
    assert h.state is not None and h.attempt is not None
    again = decider.finish(h.state, h.attempt, "succeeded", None, envelope={}, at=at(50))
    assert again.events == [] and again.verdict is not None and not again.verdict.late
    assert not again.verdict.cancelled
    running_again = decider.running(*_claimed_running(), envelope={})
    assert running_again.events == []


def _claimed_running() -> tuple[RolloutState, AttemptState]:
    h = history("ro-3").claim().running()
    assert h.state is not None and h.attempt is not None
    return h.state, h.attempt


def test_an_unresponsive_attempt_that_reports_again_is_late_and_told_to_stop():
    h = history("ro-1", RETRY).claim().running().expire("unresponsive")
    assert h.state is not None and h.attempt is not None
    beat = decider.heartbeat(h.state, h.attempt, envelope={})
    assert beat.verdict is not None and beat.verdict.late and beat.verdict.cancelled
    assert beat.attempt is not None and beat.attempt.status == "unresponsive"
    # Only the first heartbeat after the end is recorded; later ones just repeat the verdict.
    again = decider.heartbeat(beat.rollout, beat.attempt, envelope={})
    assert again.events == [] and again.verdict is not None and again.verdict.cancelled


def test_only_the_newest_attempt_decides():
    h = history("ro-1", RETRY).claim().running().expire("timeout").claim()
    assert h.state is not None
    old = AttemptState("at-ro-1-1", "ro-1", 1, "w1", "timeout")
    late = decider.running(h.state, old, envelope={})
    assert late.rollout.status == "preparing" and late.verdict is not None and late.verdict.late


def test_a_claim_that_starts_is_one_decision_carrying_the_attempts_start():
    h = history("ro-1")
    assert h.state is not None
    decision = decider.claim(h.state, "at-1", "w1", envelope={}, at=at(5), start=True)
    (event,) = decision.events  # no attempt.started beside it: the decision carries the start
    assert isinstance(event, RolloutTransitioned)
    assert (event.seq, event.cause, event.status, event.attempt_status) == (1, "claimed", "running", "running")
    assert (event.attempt_id, event.attempt_sequence_id, event.worker_id) == ("at-1", 1, "w1")
    assert event.attempt_started_at == at(5) and event.attempt_ended_at is None
    preparing = decider.claim(h.state, "at-1", "w1", envelope={}, at=at(5))
    (claimed,) = preparing.events
    assert isinstance(claimed, RolloutTransitioned) and (claimed.status, claimed.attempt_status) == ("preparing",) * 2


def test_the_decision_that_ends_an_attempt_carries_its_end_and_error():
    h = history("ro-1", RETRY).claim().running()
    assert h.state is not None and h.attempt is not None
    expired = decider.expire(h.state, h.attempt, "timeout", envelope={}, at=at(9))
    (ended, requeued) = expired.events
    assert isinstance(ended, RolloutTransitioned) and requeued.type == "rollout.requeued"
    assert (ended.attempt_status, ended.attempt_ended_at, ended.attempt_started_at) == ("timeout", at(9), None)
    assert ended.attempt_error is not None and ended.attempt_error.type == "timeout"
    cancelled = decider.cancel(h.state, [h.attempt], "stop", envelope={}, at=at(10))
    (_, stopped) = cancelled.events
    assert isinstance(stopped, RolloutTransitioned)
    assert (stopped.attempt_status, stopped.attempt_ended_at, stopped.attempt_error) == ("cancelled", at(10), None)
    # A late report ends nothing: it carries no end.
    late = decider.finish(expired.rollout, expired.attempt, "succeeded", None, envelope={}, at=at(11))  # type: ignore[arg-type]
    (event,) = late.events
    assert isinstance(event, RolloutTransitioned) and event.cause == "late" and event.attempt_ended_at is None
