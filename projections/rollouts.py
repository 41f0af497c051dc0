"""The rollouts read model: each rollout with its attempts, and the statuses the lifecycle decider decided.

Statuses are never derived here. Every decision about a rollout (claim, running, finish, timeout, unresponsive,
requeue, cancel, a late report) is taken once by the lifecycle write model (``producers/decider.py``) and
recorded as a ``rollout.transitioned`` event numbered per rollout (``seq``). This fold keeps, for the rollout and
for each attempt, the statuses of the highest-numbered decision it has seen: no clock and no order between the
rollouts and attempts topics can change the outcome, and a copy of any event changes nothing (every event type is
applied idempotently, so the engine keeps no event-id ledger for this projection).

The decisions (from version 2) and the other events add facts, each first-wins or earliest/latest-wins so their
order does not matter either: the enqueue's input and config, an attempt's worker and start, its error and end,
heartbeat times. Logs written before version 2 carry an attempt's start and end as ``attempt.started`` and
``attempt.finished`` events, which fold by the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
from psycopg.rows import class_row
from psycopg.types.json import Json, set_json_loads

from projections.base import Envelope, Projection
from projections.migrations import load_package_migrations
from schemas import (
    TERMINAL_STATUSES,
    AttemptFinished,
    AttemptHeartbeat,
    AttemptStarted,
    RolloutCancelled,
    RolloutEnqueued,
    RolloutRequeued,
    RolloutTransitioned,
)
from schemas.bounds import BIGINT_MAX
from schemas.topics import ATTEMPTS, ROLLOUTS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

RolloutEvent = (
    RolloutEnqueued
    | RolloutCancelled
    | RolloutRequeued
    | RolloutTransitioned
    | AttemptStarted
    | AttemptHeartbeat
    | AttemptFinished
)


@dataclass
class RolloutRow:
    rollout_id: str
    status: str = "queuing"
    enqueued: bool = False
    input: Any = None
    mode: str | None = None
    resources_id: str | None = None
    config: Any = None
    metadata: Any = None
    priority: int = 0
    enqueued_at: datetime | None = None
    cancelled_at: datetime | None = None
    requeued_after: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    attempt_count: int = 0
    latest_attempt_id: str | None = None
    #: the number of the newest decision applied (0: none yet, the rollout is queuing)
    decision_seq: int = 0


@dataclass
class AttemptRow:
    attempt_id: str
    rollout_id: str
    sequence_id: int | None = None
    worker_id: str | None = None
    status: str = "preparing"
    start_time: datetime | None = None
    end_time: datetime | None = None
    last_heartbeat_time: datetime | None = None
    error: Any = None
    metadata: Any = None
    #: reports that came after the attempt had ended (recorded, changed nothing)
    late_reports: int = 0
    decision_seq: int = 0


@dataclass
class State:
    """The rows a batch touches, loaded before the fold and written back after it."""

    rollouts: dict[str, RolloutRow]
    attempts: dict[str, AttemptRow]


# -- the fold (pure) ----------------------------------------------------------------------------------------
def fold(state: State, event: RolloutEvent) -> None:
    """Record one event in ``state``."""
    row = state.rollouts.get(event.rollout_id)
    if row is None:  # not setdefault: that would build a row for every event
        row = state.rollouts[event.rollout_id] = RolloutRow(event.rollout_id)
    # ``type(...) is`` rather than isinstance: event classes are final, and this runs for every event.
    kind = type(event)
    if kind is RolloutTransitioned:
        _apply_decision(state, row, cast("RolloutTransitioned", event))
    elif kind is AttemptHeartbeat or kind is AttemptStarted or kind is AttemptFinished:
        _fold_attempt(state, event)  # type: ignore[arg-type]
    elif isinstance(event, RolloutEnqueued):
        if not row.enqueued:  # creation is idempotent: the first enqueue of an id wins
            row.enqueued, row.input, row.mode = True, event.input, event.mode
            row.resources_id, row.priority, row.enqueued_at = event.resources_id, event.priority, event.occurred_at
            row.config, row.metadata = event.config.model_dump(mode="json"), event.metadata
    elif isinstance(event, RolloutCancelled):
        row.cancelled_at = _earliest(row.cancelled_at, event.occurred_at)
    elif isinstance(event, RolloutRequeued) and event.after_attempt_id is not None:
        # Display only (the status comes with the decision): the requeue after the newest attempt. Attempt ids
        # carry no order, so the newest is the one whose attempt has the highest sequence id when known.
        row.requeued_after = _newer_attempt(state, row.requeued_after, event.after_attempt_id)


def _apply_decision(state: State, row: RolloutRow, decision: RolloutTransitioned) -> None:
    if decision.seq > row.decision_seq:
        row.decision_seq, row.status = decision.seq, decision.status
        row.attempt_count, row.latest_attempt_id = decision.attempt_count, decision.latest_attempt_id
    # The decision that made the rollout terminal is the earliest terminal one: every later one stays terminal.
    if decision.status in TERMINAL_STATUSES:
        row.end_time = _earliest(row.end_time, decision.occurred_at)
    if decision.cause == "claimed":
        row.start_time = _earliest(row.start_time, decision.occurred_at)
    if decision.attempt_id is None:
        return
    attempt = _attempt(state, decision.attempt_id, decision.rollout_id)
    if decision.seq > attempt.decision_seq:
        attempt.decision_seq = decision.seq
        attempt.status = decision.attempt_status or attempt.status
        attempt.late_reports = decision.late_reports
    attempt.sequence_id = attempt.sequence_id or decision.attempt_sequence_id
    attempt.worker_id = attempt.worker_id or decision.worker_id
    # The attempt facts a v2 decision carries, with the rules of the v1 events that carried them before
    # (attempt.started: earliest start; attempt.finished: an attempt ends once).
    if decision.attempt_started_at is not None:
        attempt.start_time = _earliest(attempt.start_time, decision.attempt_started_at)
        attempt.metadata = attempt.metadata or {}  # as attempt.started's: a claim records no metadata
    if decision.attempt_ended_at is not None and attempt.end_time is None:
        attempt.end_time = decision.attempt_ended_at
        attempt.error = None if decision.attempt_error is None else decision.attempt_error.model_dump(mode="json")


def _attempt(state: State, attempt_id: str, rollout_id: str) -> AttemptRow:
    attempt = state.attempts.get(attempt_id)
    if attempt is None:
        attempt = state.attempts[attempt_id] = AttemptRow(attempt_id, rollout_id)
    return attempt


def _newer_attempt(state: State, current: str | None, candidate: str) -> str:
    if current is None:
        return candidate

    def rank(attempt_id: str) -> tuple[int, str]:
        found = state.attempts.get(attempt_id)
        return ((found.sequence_id or 0) if found else 0, attempt_id)

    return max(current, candidate, key=rank)


def _fold_attempt(state: State, event: AttemptStarted | AttemptHeartbeat | AttemptFinished) -> None:
    attempt = _attempt(state, event.attempt_id, event.rollout_id)
    if type(event) is AttemptHeartbeat:
        attempt.last_heartbeat_time = _latest(attempt.last_heartbeat_time, event.occurred_at)
        attempt.worker_id = attempt.worker_id or event.worker_id
    elif type(event) is AttemptStarted:  # first-wins: a re-published older start never overwrites
        attempt.sequence_id = attempt.sequence_id or event.sequence_id
        attempt.worker_id = attempt.worker_id or event.worker_id
        attempt.metadata = attempt.metadata or event.metadata
        attempt.start_time = _earliest(attempt.start_time, event.occurred_at)
    elif type(event) is AttemptFinished and attempt.end_time is None:  # an attempt ends once
        attempt.end_time = event.occurred_at
        attempt.error = None if event.error is None else event.error.model_dump(mode="json")


def _earliest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b < a else a


def _latest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def fold_all(state: State, events: Sequence[RolloutEvent]) -> set[str]:
    """Fold ``events`` in order; return the ids of the rollouts they touch."""
    touched: set[str] = set()
    for event in events:
        fold(state, event)
        touched.add(event.rollout_id)
    return touched


# -- apply: load, fold, save ----------------------------------------------------------------------------------
_ROLLOUT_COLS = [f.name for f in fields(RolloutRow)]
_ATTEMPT_COLS = [f.name for f in fields(AttemptRow)]


async def _upsert(conn: AsyncConnection[Any], table: str, cols: list[str], rows: Sequence[Any]) -> None:
    """Write ``rows`` (row dataclasses) with one INSERT ... ON CONFLICT fed by a single JSON array.

    orjson turns the dataclasses, their datetimes and JSON columns into one document in C, and PostgreSQL's
    ``jsonb_populate_recordset`` types it by the table's own columns. A binary COPY into a staging table costs
    PostgreSQL less but Python three times more (a dumper call per value), and Python is what limits a rebuild
    on two cores. A value a column cannot hold (an integer beyond int4, a NUL character) makes PostgreSQL
    raise, so the engine parks the event that carried it.
    """
    if not rows:
        return
    names = ", ".join(cols)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols[1:])
    await conn.execute(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb) "  # noqa: S608
        f"ON CONFLICT ({cols[0]}) DO UPDATE SET {updates}",
        (Json(rows, dumps=orjson.dumps),),
    )


async def load_state(conn: AsyncConnection[Any], rollout_ids: list[str]) -> State:
    async with conn.cursor(row_factory=class_row(RolloutRow)) as cur:
        set_json_loads(orjson.loads, cur)  # the stdlib parser was a visible share of loading
        await cur.execute(
            f"SELECT {', '.join(_ROLLOUT_COLS)} FROM rollouts WHERE rollout_id = ANY(%b)",  # noqa: S608
            (rollout_ids,),
        )
        rollouts = {r.rollout_id: r for r in await cur.fetchall()}
    return State(rollouts, await _attempts_where(conn, "rollout_id", rollout_ids))


async def _attempts_where(conn: AsyncConnection[Any], column: str, values: Sequence[str]) -> dict[str, AttemptRow]:
    async with conn.cursor(row_factory=class_row(AttemptRow)) as cur:
        set_json_loads(orjson.loads, cur)
        await cur.execute(
            f"SELECT {', '.join(_ATTEMPT_COLS)} FROM attempts WHERE {column} = ANY(%b)",  # noqa: S608
            (list(values),),
        )
        return {a.attempt_id: a for a in await cur.fetchall()}


async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    """Load the touched rollouts, fold the batch into them, write them back (one statement per table)."""
    # The engine hands over only the event types this projection declares (``event_types`` below).
    events = cast("list[RolloutEvent]", [e.event for e in envelopes])
    state = await load_state(conn, sorted({e.rollout_id for e in events}))
    touched = fold_all(state, events)
    touched_attempts: set[str] = set()
    for e in events:
        attempt_id = getattr(e, "attempt_id", None)  # attempt events, and decisions about an attempt
        if attempt_id is not None:
            touched_attempts.add(attempt_id)
    await _upsert(conn, "rollouts", _ROLLOUT_COLS, [state.rollouts[i] for i in sorted(touched)])
    await _upsert(conn, "attempts", _ATTEMPT_COLS, [state.attempts[i] for i in sorted(touched_attempts)])


# -- read queries (run with search_path at the active generation) --------------------------------------------------
#: At most this many statuses are read each in its own index order; more (only unknown ones can make more, from a
#: foreign client) are filtered in one scan and sorted.
_STATUS_RUNS = 8
_ORDER = "ORDER BY enqueued_at NULLS LAST, rollout_id"


def page_query(
    *, status: Sequence[str] = (), mode: str | None = None, rollout_ids: Sequence[str] = (), limit: int, offset: int
) -> tuple[str, str, dict[str, Any]]:
    """The statements of :func:`list_rollouts` (the count's, the page's) and their parameters.

    A page reads about a page of rows, not every match. Each status is read in the order of its index (status,
    enqueued_at, rollout_id), ``limit + offset`` rows at most, and the runs are merged; with no status the mode's
    index or the enqueue order's serves. ``status = ANY(...)`` made PostgreSQL read and sort every match: a page of
    one from 40,000 succeeded rollouts read them all (3.5 ms), and it grew with the history.
    """
    statuses = sorted(set(status))
    params: dict[str, Any] = {
        "status": statuses,
        "mode": mode,
        "ids": list(rollout_ids),
        "limit": limit,
        "offset": offset,
        "window": min(limit + offset, BIGINT_MAX),
    }
    shared = [
        *(["mode = %(mode)s"] if mode is not None else []),
        *(["rollout_id = ANY(%(ids)s)"] if rollout_ids else []),
    ]

    def where(*conditions: str) -> str:
        return " WHERE " + " AND ".join(conditions) if conditions else ""

    columns = ", ".join(_ROLLOUT_COLS)
    by_status = ["status = ANY(%(status)s)"] if statuses else []
    count = f"SELECT count(*) FROM rollouts{where(*by_status, *shared)}"  # noqa: S608 - fixed fragments only
    if len(statuses) < 2 or len(statuses) > _STATUS_RUNS:
        if len(statuses) == 1:
            by_status, params["s0"] = ["status = %(s0)s"], statuses[0]
        page = f"SELECT {columns} FROM rollouts{where(*by_status, *shared)} {_ORDER}"  # noqa: S608
    else:
        runs = []
        for i, value in enumerate(statuses):
            params[f"s{i}"] = value
            run = f"SELECT {columns} FROM rollouts{where(f'status = %(s{i})s', *shared)}"  # noqa: S608
            runs.append(f"({run} {_ORDER} LIMIT %(window)s)")
        page = f"SELECT * FROM ({' UNION ALL '.join(runs)}) AS runs {_ORDER}"  # noqa: S608
    return count, f"{page} LIMIT %(limit)s OFFSET %(offset)s", params


async def list_rollouts(
    conn: AsyncConnection[Any],
    *,
    status: Sequence[str] = (),
    mode: str | None = None,
    rollout_ids: Sequence[str] = (),
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[RolloutRow], int]:
    """Rollouts matching every given filter, oldest enqueue first, and the total count of matches."""
    count, page, params = page_query(status=status, mode=mode, rollout_ids=rollout_ids, limit=limit, offset=offset)
    cur = await conn.execute(count, params)
    total_row = await cur.fetchone()
    async with conn.cursor(row_factory=class_row(RolloutRow)) as rows:
        await rows.execute(page, params)
        return await rows.fetchall(), int(total_row[0]) if total_row else 0


async def get_attempts(conn: AsyncConnection[Any], attempt_ids: Sequence[str]) -> dict[str, AttemptRow]:
    """Attempts by id (those that exist)."""
    return await _attempts_where(conn, "attempt_id", attempt_ids) if attempt_ids else {}


async def get_rollout(conn: AsyncConnection[Any], rollout_id: str) -> tuple[RolloutRow, list[AttemptRow]] | None:
    """One rollout and its attempts in sequence order, or ``None``."""
    state = await load_state(conn, [rollout_id])
    row = state.rollouts.get(rollout_id)
    if row is None:
        return None
    return row, sorted(state.attempts.values(), key=lambda a: (a.sequence_id is None, a.sequence_id or 0))


PROJECTION = Projection(
    name="rollouts",
    # 2: statuses come from the decider's rollout.transitioned events (v1 derived them from clocks).
    version=2,
    topics=(ROLLOUTS, ATTEMPTS),
    event_types=frozenset(
        {
            RolloutEnqueued,
            RolloutCancelled,
            RolloutRequeued,
            RolloutTransitioned,
            AttemptStarted,
            AttemptHeartbeat,
            AttemptFinished,
        }
    ),
    migrations=tuple(load_package_migrations("projections", "sql/rollouts")),
    apply=apply,
    tables=("rollouts", "attempts"),
    idempotent_types=frozenset(
        {
            RolloutEnqueued,
            RolloutCancelled,
            RolloutRequeued,
            RolloutTransitioned,
            AttemptStarted,
            AttemptHeartbeat,
            AttemptFinished,
        }
    ),
    per_key_ordering=True,
    description="rollouts and their attempts, with the statuses the lifecycle decided (GET /v1/rollouts)",
)
