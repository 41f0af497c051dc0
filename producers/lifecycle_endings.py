"""Decisions that end attempts from outside their runner: a cancel, the watchdog's expiry of attempts past their
deadlines, and a worker that left. Each is decided under the rollout's row lock, as :mod:`producers.lifecycle`
decides a runner's reports, and recorded in the outbox with the new states.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from producers import decider, outbox
from producers.decider import AttemptState, RolloutState
from producers.errors import UnknownEntity
from producers.lifecycle import clock_now, config_of, save_decision
from producers.pipelined import pipelined_transaction

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from producers.publisher import EventPublisher


async def _save_rollout(conn: AsyncConnection[Any], state: RolloutState, *, ended_at: datetime | None) -> None:
    await conn.execute(
        "UPDATE lifecycle_rollouts SET status = %s, seq = %s, attempt_count = %s, latest_attempt_id = %s,"
        " ended_at = COALESCE(ended_at, %s) WHERE rollout_id = %s",
        (state.status, state.seq, state.attempt_count, state.latest_attempt_id, ended_at, state.rollout_id),
    )


async def _lock_rollout(conn: AsyncConnection[Any], rollout_id: str) -> RolloutState:
    rollout = await _locked(conn, rollout_id, "FOR UPDATE")
    if rollout is None:
        raise UnknownEntity(f"no rollout {rollout_id!r}")
    return rollout


async def _locked(conn: AsyncConnection[Any], rollout_id: str, lock: str) -> RolloutState | None:
    """The rollout's write-model state, its row locked by ``lock`` (``FOR UPDATE [SKIP LOCKED]``)."""
    cur = await conn.execute(
        "SELECT status, seq, config, attempt_count, latest_attempt_id FROM lifecycle_rollouts"  # noqa: S608
        f" WHERE rollout_id = %s {lock}",
        (rollout_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    status, seq, raw_config, count, latest = row
    return RolloutState(rollout_id, status, seq, config_of(raw_config), count, latest)


# -- cancel -------------------------------------------------------------------------------------------------
async def cancel(
    conn: AsyncConnection[Any],
    publisher: EventPublisher,
    rollout_id: str,
    reason: str | None,
    envelope: dict[str, Any],
) -> list[int]:
    """Cancel a rollout (its active attempt ends ``cancelled``); a terminal rollout is left as it is.

    Raises:
        UnknownEntity: no such rollout.
    """
    async with pipelined_transaction(conn):
        rollout = await _lock_rollout(conn, rollout_id)
        cur = await conn.execute(
            "SELECT attempt_id, sequence_id, worker_id, status, late_reports FROM lifecycle_attempts"
            " WHERE rollout_id = %s AND ended_at IS NULL ORDER BY sequence_id",
            (rollout_id,),
        )
        active = [AttemptState(a, rollout_id, s, w, st, late) for a, s, w, st, late in await cur.fetchall()]
        now = await clock_now(conn)
        decision = decider.cancel(rollout, active, reason, envelope=envelope, at=now)
        if decision.events:
            await _save_rollout(conn, decision.rollout, ended_at=now)
            await conn.execute(
                "UPDATE lifecycle_attempts SET status = 'cancelled', ended_at = %s"
                " WHERE rollout_id = %s AND ended_at IS NULL",
                (now, rollout_id),
            )
        return await outbox.append(conn, publisher, decision.events)


# -- the watchdog -------------------------------------------------------------------------------------------
async def expire_overdue(
    conn: AsyncConnection[Any], publisher: EventPublisher, envelope: dict[str, Any], *, limit: int = 200
) -> int:
    """End attempts past their timeout or unresponsive deadline; returns how many were ended.

    Each rollout is decided under its own row lock, skipping rollouts another decision holds (their attempt is
    being reported on right now: the next sweep looks again).
    """
    cur = await conn.execute(
        "SELECT attempt_id, rollout_id FROM lifecycle_attempts WHERE ended_at IS NULL"
        " AND (timeout_at <= now() OR unresponsive_at <= now()) ORDER BY attempt_id LIMIT %s",
        (limit,),
    )
    overdue = await cur.fetchall()
    ended = 0
    for attempt_id, rollout_id in overdue:
        async with pipelined_transaction(conn):
            rollout = await _locked(conn, rollout_id, "FOR UPDATE SKIP LOCKED")
            if rollout is None:  # another decision holds it: the next sweep looks again
                continue
            cur = await conn.execute(
                "SELECT sequence_id, worker_id, status, late_reports, timeout_at <= now() FROM lifecycle_attempts"
                " WHERE attempt_id = %s AND ended_at IS NULL AND (timeout_at <= now() OR unresponsive_at <= now())",
                (attempt_id,),
            )
            found = await cur.fetchone()
            if found is None:  # reported on since the sweep's query
                continue
            attempt = AttemptState(attempt_id, rollout_id, found[0], found[1], found[2], found[3])
            now = await clock_now(conn)
            decision = decider.expire(
                rollout, attempt, "timeout" if found[4] else "unresponsive", envelope=envelope, at=now
            )
            await save_decision(conn, decision, now)
            await outbox.append(conn, publisher, decision.events)
            ended += 1
    return ended


async def abandon_worker(
    conn: AsyncConnection[Any], publisher: EventPublisher, worker_id: str, envelope: dict[str, Any]
) -> int:
    """A worker left: its attempts still at work are ended unresponsive now (and retried by the rules)."""
    await conn.execute(
        "UPDATE lifecycle_attempts SET unresponsive_at = now() WHERE worker_id = %s AND ended_at IS NULL",
        (worker_id,),
    )
    return await expire_overdue(conn, publisher, envelope)
