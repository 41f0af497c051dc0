"""A batch of one worker's reports, decided in one transaction: what lets a runner with many slots report at the
rate it works instead of one round trip (and one commit) per report.

The batch locks its rollouts' rows in id order (so two batches, or a batch and a single report, cannot deadlock),
then decides each report in the order sent with :mod:`producers.decider`, exactly as the single-report routes do
(two reports of one attempt in one batch see each other's decisions). A report that would be refused alone (no
such rollout or attempt: 404; another worker's attempt: 409) is refused alone, and the others are decided. The
new states are written in two statements and every event goes to the outbox in one append, spans and rewards a
finish carries included: an attempt's results and its outcome commit together or not at all, and
``results_recorded`` makes them count once however often the finish is resent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from producers import decider, outbox
from producers.decider import AttemptState, RolloutState, Verdict
from producers.lifecycle import config_of, heartbeat_event, save_rollouts
from producers.pipelined import pipelined_transaction
from producers.span_batches import spans_event, spans_records
from producers.span_numbers import span_sequence_ids
from schemas import ErrorInfo, Event, RewardAssigned

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from psycopg import AsyncConnection

    from producers.lifecycle_models import ReportItemIn
    from producers.publisher import EventPublisher, Record


@dataclass(frozen=True)
class Refused:
    """A report refused on its own, answered as the single-report route would have answered it."""

    status_code: int
    detail: str


@dataclass
class _Attempt:
    state: AttemptState
    results_recorded: bool
    #: a report showed it alive (its unresponsive deadline moves)
    seen: bool = False
    #: its results are recorded by this batch
    recording: bool = False
    touched: bool = False


async def report_many(
    conn: AsyncConnection[Any],
    publisher: EventPublisher,
    *,
    worker_id: str,
    reports: Sequence[ReportItemIn],
    envelope: dict[str, Any],
) -> tuple[list[Verdict | Refused], list[int]]:
    """Decide ``reports`` (all of ``worker_id``) in one transaction; a verdict or a refusal per report, in order,
    and the outbox rows of their events."""
    async with pipelined_transaction(conn):
        rollouts, attempts, now = await _lock_and_read(
            conn, sorted({r.rollout_id for r in reports}), sorted({r.attempt_id for r in reports})
        )
        answers: list[Verdict | Refused] = []
        events: list[Event] = []
        touched: set[str] = set()
        results: list[ReportItemIn] = []  # the finishes whose spans and rewards this batch records
        for report in reports:
            rollout, attempt = rollouts.get(report.rollout_id), attempts.get(report.attempt_id)
            if rollout is None:
                answers.append(Refused(404, f"no rollout {report.rollout_id!r}"))
                continue
            if attempt is None or attempt.state.rollout_id != report.rollout_id:
                answers.append(Refused(404, f"no attempt {report.attempt_id!r} of rollout {report.rollout_id!r}"))
                continue
            if attempt.state.worker_id != worker_id:
                who = attempt.state.worker_id
                answers.append(Refused(409, f"attempt {report.attempt_id!r} was claimed by worker {who!r}"))
                continue
            decision = _decide(rollout, attempt.state, report, envelope, now)
            alive = attempt.state.status in decider.ACTIVE
            if alive and report.kind == "heartbeat":
                decision.events.append(heartbeat_event(report.rollout_id, report.attempt_id, worker_id, envelope, now))
            if report.kind == "finish" and (report.spans or report.rewards) and not attempt.results_recorded:
                attempt.results_recorded = attempt.recording = True
                results.append(report)
            rollouts[report.rollout_id] = decision.rollout
            attempt.state = decision.attempt or attempt.state
            if decision.events or alive or attempt.recording:
                attempt.seen = attempt.seen or alive
                attempt.touched = True
                touched.add(report.rollout_id)
            events.extend(decision.events)
            assert decision.verdict is not None
            answers.append(decision.verdict)
        records = await _results(conn, publisher, results, envelope)
        records += [publisher.record_of(event) for event in events]
        await _save(conn, [rollouts[i] for i in sorted(touched)], [a for a in attempts.values() if a.touched], now)
        ids = await outbox.append_records(conn, records)
    return answers, ids


def _decide(
    rollout: RolloutState, attempt: AttemptState, report: ReportItemIn, envelope: dict[str, Any], now: datetime
) -> decider.Decision:
    if report.kind == "running":
        return decider.running(rollout, attempt, envelope=envelope)
    if report.kind == "heartbeat":
        return decider.heartbeat(rollout, attempt, envelope=envelope)
    assert report.status is not None  # the model requires it with a finish
    error = None if report.error is None else ErrorInfo(**report.error.model_dump())
    return decider.finish(rollout, attempt, report.status, error, envelope=envelope, at=now)


async def _lock_and_read(
    conn: AsyncConnection[Any], rollout_ids: list[str], attempt_ids: list[str]
) -> tuple[dict[str, RolloutState], dict[str, _Attempt], datetime]:
    """The rollouts' write-model states, their rows locked in id order; then the decisions' time and the attempts.

    The three statements go out together (one round trip in pipeline mode). PostgreSQL runs them in order, so the
    clock and the attempts are read once the locks are held (see producers.lifecycle).
    """
    locked = await conn.execute(
        "SELECT rollout_id, status, seq, config, attempt_count, latest_attempt_id FROM lifecycle_rollouts"
        " WHERE rollout_id = ANY(%b) ORDER BY rollout_id FOR UPDATE",
        (rollout_ids,),
    )
    clock = await conn.execute("SELECT clock_timestamp()")
    read = await conn.execute(
        "SELECT attempt_id, rollout_id, sequence_id, worker_id, status, late_reports, results_recorded"
        " FROM lifecycle_attempts WHERE attempt_id = ANY(%b)",
        (attempt_ids,),
    )
    states = {
        rid: RolloutState(rid, status, seq, config_of(raw), count, latest)
        for rid, status, seq, raw, count, latest in await locked.fetchall()
    }
    row = await clock.fetchone()
    assert row is not None
    attempts = {
        aid: _Attempt(AttemptState(aid, rid, seq, worker, status, late), recorded)
        for aid, rid, seq, worker, status, late, recorded in await read.fetchall()
    }
    return states, attempts, row[0]


async def _results(
    conn: AsyncConnection[Any], publisher: EventPublisher, finishes: list[ReportItemIn], envelope: dict[str, Any]
) -> list[Record]:
    """The records of the spans and rewards the finishes carry: each finish's spans in one ``spans.recorded``
    (numbered as the spans route numbers them), then the rewards as the rewards route records them."""
    sequence_ids = await span_sequence_ids(conn, [span for report in finishes for span in report.spans])
    records: list[Record] = []
    start = 0
    for report in finishes:
        if report.spans:
            numbers = sequence_ids[start : start + len(report.spans)]
            start += len(report.spans)
            event = spans_event(report.rollout_id, report.attempt_id, report.spans, numbers, envelope)
            records += spans_records(publisher, event)
    rewards = (RewardAssigned(**dict(reward), **envelope) for report in finishes for reward in report.rewards)
    records += [publisher.record_of(event) for event in rewards]
    return records


async def _save(
    conn: AsyncConnection[Any], rollouts: list[RolloutState], attempts: list[_Attempt], now: datetime
) -> None:
    """The decisions' new states: every touched rollout and attempt, in two statements."""
    await save_rollouts(conn, rollouts, now)
    if attempts:
        await conn.execute(
            "UPDATE lifecycle_attempts AS a SET status = v.status, late_reports = v.late,"
            " ended_at = CASE WHEN v.ended THEN COALESCE(a.ended_at, %(now)s) ELSE a.ended_at END,"
            " unresponsive_at = CASE WHEN v.seen THEN %(now)s + (a.unresponsive_at - a.last_seen)"
            " ELSE a.unresponsive_at END,"
            " last_seen = CASE WHEN v.seen THEN %(now)s ELSE a.last_seen END,"
            " results_recorded = a.results_recorded OR v.recorded"
            " FROM unnest(%(ids)b::text[], %(statuses)b::text[], %(lates)b::int[], %(ended)b::bool[],"
            " %(seen)b::bool[], %(recorded)b::bool[]) AS v(id, status, late, ended, seen, recorded)"
            " WHERE a.attempt_id = v.id",
            {
                "now": now,
                "ids": [a.state.attempt_id for a in attempts],
                "statuses": [a.state.status for a in attempts],
                "lates": [a.state.late_reports for a in attempts],
                "ended": [a.state.status not in decider.ACTIVE for a in attempts],
                "seen": [a.seen for a in attempts],
                "recorded": [a.recording for a in attempts],
            },
        )
