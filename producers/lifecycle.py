"""The lifecycle write model in PostgreSQL: each decision is one transaction that locks the rollout's row,
decides with :mod:`producers.decider`, updates the rows and appends the decision's events to the outbox.

Claims use ``FOR UPDATE SKIP LOCKED`` in queue order (priority, then enqueue order), so concurrent workers
never claim one rollout twice and never wait on each other. Times of decisions are PostgreSQL's clock read once
the decision's rows are locked (``clock_timestamp()``, not the transaction's start, ``now()``): one clock for
every API process and the watchdog, and a decision that waited for another's lock is timed after it. (A claim
whose transaction began before the failure it retries was once stamped before that failure's end.)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from psycopg.types.json import Jsonb

from producers import decider, outbox
from producers.decider import AttemptState, RolloutState, Verdict
from producers.errors import NotYourAttempt, UnknownEntity
from producers.pipelined import pipelined_transaction
from schemas import TERMINAL_STATUSES, AttemptHeartbeat, ErrorInfo, RolloutConfig, RolloutEnqueued

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection

    from producers.publisher import EventPublisher

#: When a rollout's config sets no ``unresponsive_seconds``, an attempt whose worker stops reporting for this
#: long is still ended as unresponsive: a worker that vanished must not hold a rollout for ever.
DEFAULT_UNRESPONSIVE_S = 300.0
_CONFIGS: dict[bytes, RolloutConfig] = {}


def config_of(raw: Any) -> RolloutConfig:
    """A rollout's stored config, parsed (the few distinct configs of a queue are parsed once)."""
    key = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    config = _CONFIGS.get(key)
    if config is None:
        config = RolloutConfig.model_validate(raw)
        if len(_CONFIGS) < 1024:
            _CONFIGS[key] = config
    return config


@dataclass(frozen=True)
class Claim:
    rollout_id: str
    attempt_id: str
    sequence_id: int
    input: Any
    mode: str | None
    resources_id: str | None
    config: dict[str, Any]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Claimed:
    """A claim's answer: the claims, the outbox rows that carry their events, and whether it answered a resend."""

    claims: list[Claim]
    ids: list[int]
    #: the worker claimed with this key before: ``claims`` are that claim's attempts still active (maybe none)
    resent: bool = False


@dataclass(frozen=True)
class Outcome:
    """A decision's answer: the verdict for the runner and the outbox rows that carry its events."""

    verdict: Verdict | None
    outbox_ids: list[int]


async def clock_now(conn: AsyncConnection[Any]) -> datetime:
    cur = await conn.execute("SELECT clock_timestamp()")
    row = await cur.fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


# -- enqueue ------------------------------------------------------------------------------------------------
async def insert_rollouts(conn: AsyncConnection[Any], events: Sequence[RolloutEnqueued]) -> None:
    """Put newly enqueued rollouts in the queue (inside the enqueueing transaction)."""
    if not events:
        return
    await conn.execute(
        "INSERT INTO lifecycle_rollouts"
        " (rollout_id, status, priority, required_capabilities, config, input, mode, resources_id, metadata)"
        " SELECT r.id, 'queuing', r.priority, r.caps, r.config, r.input, r.mode, r.resources_id, r.metadata"
        " FROM jsonb_to_recordset(%s::jsonb) AS r(id text, priority int, caps text[], config jsonb, input jsonb,"
        " mode text, resources_id text, metadata jsonb, n int)"
        " ORDER BY r.n ON CONFLICT (rollout_id) DO NOTHING",
        (
            Jsonb(
                [
                    {
                        "id": e.rollout_id,
                        "priority": e.priority,
                        "caps": sorted(set(e.required_capabilities)),
                        "config": e.config.model_dump(mode="json"),
                        "input": e.input,
                        "mode": e.mode,
                        "resources_id": e.resources_id,
                        "metadata": e.metadata,
                        "n": n,
                    }
                    for n, e in enumerate(events)
                ],
                dumps=orjson.dumps,
            ),
        ),
    )


# -- claims -------------------------------------------------------------------------------------------------
#: Claimable rollouts, none when the worker's key claimed before (a resend; read once the key's lock is held).
#: Unkeyed, the key is NULL and the guard holds: ``claim_key = NULL`` matches no row.
_CLAIMABLE = (
    "SELECT rollout_id, status, seq, config, attempt_count, latest_attempt_id, input, mode, resources_id,"
    " metadata FROM lifecycle_rollouts"
    " WHERE status IN ('queuing', 'requeuing') AND required_capabilities <@ %b::text[]"
    " AND NOT EXISTS (SELECT 1 FROM lifecycle_attempts WHERE worker_id = %s AND claim_key = %s)"
    " ORDER BY priority DESC, queue_order LIMIT %s FOR UPDATE SKIP LOCKED"
)
#: For the claim's transaction: the claimable select walks the queue's index in its order, and stops at the limit.
#: The index keeps an entry for every rollout claimed since the table's last vacuum (a claim changes the status it
#: is partial on); an index scan marks those dead as it passes them, once. PostgreSQL's own choice, as it guesses
#: that the capabilities filter keeps a few rows only (0.5%) and the limit then saves nothing, was a bitmap scan,
#: which never marks them, so every claim read them all again in the heap (in ``bench/lifecycle.py``'s stack after
#: 17,000 claims: 9 ms, against 0.15 ms for the index scan), or a sequential scan of the table and a sort. A claim
#: of 100 from a queue of 20,000: 7.6 and 9.7 ms with PostgreSQL's plan, 4.1 and 5.0 ms with this one (two runs of
#: ``bench/claim_scan.py``).
#: The settings hold to the transaction's end: its later statements insert from arrays (untouched) or update the
#: claimed rows by key (then through the primary key, where a hash join could scan the table).
_QUEUE_ORDER_SCAN = (
    "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true),"
    " set_config('enable_sort', 'off', true)"
)
#: The attempts one key claimed (in the order they were claimed), whether each is still active.
_PRIOR_CLAIMS = (
    "SELECT r.rollout_id, a.attempt_id, a.sequence_id, r.input, r.mode, r.resources_id, r.config, r.metadata,"
    " a.ended_at IS NULL FROM lifecycle_attempts a JOIN lifecycle_rollouts r USING (rollout_id)"
    " WHERE a.worker_id = %s AND a.claim_key = %s ORDER BY r.priority DESC, r.queue_order"
)


async def claim(
    conn: AsyncConnection[Any],
    publisher: EventPublisher,
    *,
    worker_id: str,
    capabilities: Sequence[str],
    limit: int,
    envelope: dict[str, Any],
    start: bool = False,
    key: str | None = None,
) -> Claimed:
    """Claim up to ``limit`` rollouts for ``worker_id`` in one transaction; each gets its next attempt.

    With ``start``, each attempt starts ``running`` at once (one decision): a runner that starts work the
    moment it claims saves a round trip, a commit and a decision per attempt.

    ``key`` (the dequeue's Idempotency-Key) makes a resent claim safe: when ``worker_id`` claimed with this key
    before, the answer is that claim's attempts still active, and nothing new is claimed. Requests with one key
    are serialised by a transaction lock, so a resend racing its original waits for it and answers its claims.
    """
    async with pipelined_transaction(conn):
        prior = None
        if key is not None:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"claim:{worker_id}:{key}",))
            prior = await conn.execute(_PRIOR_CLAIMS, (worker_id, key))
        await conn.execute(_QUEUE_ORDER_SCAN)
        cur = await conn.execute(_CLAIMABLE, (sorted(set(capabilities)), worker_id, key, limit))
        # Sent with the claim's select (one round trip), and run after it: the time is read once the locks are held.
        clock = await conn.execute("SELECT clock_timestamp()")
        if prior is not None:
            earlier = await prior.fetchall()
            if earlier:  # a resend: the guard kept the select from claiming more
                active = [
                    Claim(rollout_id, attempt_id, seq, input_, mode, resources_id, config, metadata or {})
                    for rollout_id, attempt_id, seq, input_, mode, resources_id, config, metadata, live in earlier
                    if live
                ]
                return Claimed(active, [], resent=True)
        rows = await cur.fetchall()
        if not rows:
            return Claimed([], [])
        row = await clock.fetchone()
        assert row is not None
        now: datetime = row[0]
        claims: list[Claim] = []
        saved: list[RolloutState] = []
        events = []
        attempts = []
        for rollout_id, status, seq, raw_config, count, latest, input_, mode, resources_id, metadata in rows:
            config = config_of(raw_config)
            state = RolloutState(rollout_id, status, seq, config, count, latest)
            attempt_id = f"at-{uuid.uuid4().hex}"
            decision = decider.claim(state, attempt_id, worker_id, envelope=envelope, at=now, start=start)
            events.extend(decision.events)
            new = decision.rollout
            assert decision.attempt is not None
            attempt_status = decision.attempt.status
            timeout_at = now + timedelta(seconds=config.timeout_seconds) if config.timeout_seconds else None
            unresponsive = config.unresponsive_seconds or DEFAULT_UNRESPONSIVE_S
            attempts.append(
                (
                    attempt_id,
                    rollout_id,
                    new.attempt_count,
                    attempt_status,
                    timeout_at,
                    now + timedelta(seconds=unresponsive),
                )
            )
            saved.append(new)
            claims.append(
                Claim(rollout_id, attempt_id, new.attempt_count, input_, mode, resources_id, raw_config, metadata or {})
            )
        await save_rollouts(conn, saved, now)
        columns = list(zip(*attempts, strict=True))
        await conn.execute(
            "INSERT INTO lifecycle_attempts (attempt_id, rollout_id, sequence_id, worker_id, status, claimed_at,"
            " last_seen, timeout_at, unresponsive_at, claim_key)"
            " SELECT a.id, a.rid, a.seq, %s, a.status, %s, %s, a.t, a.u, %s"
            " FROM unnest(%b::text[], %b::text[], %b::int[], %b::text[], %b::timestamptz[], %b::timestamptz[])"
            " AS a(id, rid, seq, status, t, u)",
            (worker_id, now, now, key, *(list(c) for c in columns)),
        )
        ids = await outbox.append(conn, publisher, events)
    return Claimed(claims, ids)


async def save_rollouts(conn: AsyncConnection[Any], rollouts: Sequence[RolloutState], now: datetime) -> None:
    """Decisions' new rollout states, in one statement (a terminal one ends at ``now``, if not ended yet)."""
    if not rollouts:
        return
    await conn.execute(
        "UPDATE lifecycle_rollouts AS r SET status = v.status, seq = v.seq, attempt_count = v.count,"
        " latest_attempt_id = v.latest, ended_at = COALESCE(r.ended_at, CASE WHEN v.terminal THEN %s END)"
        " FROM unnest(%b::text[], %b::text[], %b::int[], %b::int[], %b::text[], %b::bool[])"
        " AS v(id, status, seq, count, latest, terminal) WHERE r.rollout_id = v.id",
        (
            now,
            [r.rollout_id for r in rollouts],
            [r.status for r in rollouts],
            [r.seq for r in rollouts],
            [r.attempt_count for r in rollouts],
            [r.latest_attempt_id for r in rollouts],
            [r.status in TERMINAL_STATUSES for r in rollouts],
        ),
    )


async def save_decision(
    conn: AsyncConnection[Any], decision: decider.Decision, now: datetime, *, seen: str | None = None
) -> None:
    """Write a decision's new states (only what a decision can change) in one statement; ``seen``: the attempt
    whose report this is, alive, so its unresponsive deadline moves."""
    rollout, attempt = decision.rollout, decision.attempt
    terminal = rollout.status in TERMINAL_STATUSES
    ended = attempt is not None and attempt.status not in decider.ACTIVE
    await conn.execute(
        "WITH r AS (UPDATE lifecycle_rollouts SET status = %(status)s, seq = %(seq)s, attempt_count = %(count)s,"
        " latest_attempt_id = %(latest)s, ended_at = COALESCE(ended_at, %(ended_at)s) WHERE rollout_id = %(rid)s)"
        " UPDATE lifecycle_attempts SET"
        " status = COALESCE(%(a_status)s, status), late_reports = COALESCE(%(a_late)s, late_reports),"
        " ended_at = CASE WHEN %(a_ended)s THEN COALESCE(ended_at, %(now)s) ELSE ended_at END,"
        " unresponsive_at = CASE WHEN attempt_id = %(seen)s THEN %(now)s + (unresponsive_at - last_seen)"
        " ELSE unresponsive_at END,"
        " last_seen = CASE WHEN attempt_id = %(seen)s THEN %(now)s ELSE last_seen END"
        " WHERE attempt_id = %(aid)s OR attempt_id = %(seen)s",
        {
            "status": rollout.status,
            "seq": rollout.seq,
            "count": rollout.attempt_count,
            "latest": rollout.latest_attempt_id,
            "ended_at": now if terminal else None,
            "rid": rollout.rollout_id,
            "a_status": attempt.status if attempt else None,
            "a_late": attempt.late_reports if attempt else None,
            "a_ended": ended,
            "now": now,
            "seen": seen,
            "aid": attempt.attempt_id if attempt else None,
        },
    )


# -- a runner's reports -------------------------------------------------------------------------------------
async def report(
    conn: AsyncConnection[Any],
    publisher: EventPublisher,
    *,
    rollout_id: str,
    attempt_id: str,
    worker_id: str,
    kind: str,
    envelope: dict[str, Any],
    status: decider.ReportedEnd | None = None,
    error: ErrorInfo | None = None,
) -> Outcome:
    """Decide on a runner's report about its attempt: ``running``, ``heartbeat`` or ``finish``.

    Raises:
        UnknownEntity: no such rollout or attempt.
        NotYourAttempt: the attempt was claimed by another worker.
    """
    async with pipelined_transaction(conn):
        rollout, attempt, now = await _lock_for_report(conn, rollout_id, attempt_id)
        if attempt.worker_id != worker_id:
            raise NotYourAttempt(f"attempt {attempt_id!r} was claimed by worker {attempt.worker_id!r}")
        if kind == "running":
            decision = decider.running(rollout, attempt, envelope=envelope)
        elif kind == "heartbeat":
            decision = decider.heartbeat(rollout, attempt, envelope=envelope)
        else:
            assert status is not None
            decision = decider.finish(rollout, attempt, status, error, envelope=envelope, at=now)
        alive = attempt.status in decider.ACTIVE
        if alive and kind == "heartbeat":
            decision.events.append(heartbeat_event(rollout_id, attempt_id, worker_id, envelope, now))
        if decision.events or alive:
            # Any report of an attempt at work is a sign of life: it pushes the unresponsive deadline.
            await save_decision(conn, decision, now, seen=attempt_id if alive else None)
        ids = await outbox.append(conn, publisher, decision.events)
    return Outcome(decision.verdict, ids)


async def _lock_for_report(
    conn: AsyncConnection[Any], rollout_id: str, attempt_id: str
) -> tuple[RolloutState, AttemptState, datetime]:
    """The rollout (locked), its attempt and the decision's time.

    Two statements, not one join: a READ COMMITTED statement that waits for the rollout's lock gets the rollout as
    the decision holding it left it, but the attempt as it was when the statement began. A heartbeat queued behind
    its attempt's finish then saw the rollout succeeded and the attempt running, and recorded (and wrote back) a
    late "running" attempt (tests/producers/test_report_behind_a_decision.py). Read once the lock is held, the
    attempt is as current as the rollout.
    """
    cur = await conn.execute(
        "SELECT status, seq, config, attempt_count, latest_attempt_id FROM lifecycle_rollouts"
        " WHERE rollout_id = %s FOR UPDATE",
        (rollout_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise UnknownEntity(f"no rollout {rollout_id!r}")
    status, seq, raw_config, count, latest = row
    cur = await conn.execute(
        "SELECT sequence_id, worker_id, status, late_reports, clock_timestamp() FROM lifecycle_attempts"
        " WHERE attempt_id = %s AND rollout_id = %s",
        (attempt_id, rollout_id),
    )
    found = await cur.fetchone()
    if found is None:
        raise UnknownEntity(f"no attempt {attempt_id!r} of rollout {rollout_id!r}")
    sequence_id, worker, attempt_status, late, now = found
    rollout = RolloutState(rollout_id, status, seq, config_of(raw_config), count, latest)
    return rollout, AttemptState(attempt_id, rollout_id, sequence_id, worker, attempt_status, late), now


def heartbeat_event(
    rollout_id: str, attempt_id: str, worker_id: str, envelope: dict[str, Any], at: datetime
) -> AttemptHeartbeat:
    return AttemptHeartbeat(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        worker_id=worker_id,
        occurred_at=at,
        **envelope,
    )
