"""The rollouts read model: each rollout with its attempts and a status derived from rollout and attempt events.

Statuses follow Agent Lightning (queuing, preparing, running, succeeded, failed, cancelled, requeuing), with its
known defects fixed:

- Terminal states are final. The status is derived from the accumulated facts, and the first terminal moment
  (by the events' recorded ``occurred_at``) wins: a cancel after a success changes nothing, a late attempt on a
  succeeded rollout changes nothing.
- Applying a copy of an event (same ``event_id``) changes nothing: facts are first-wins, earliest-wins,
  latest-wins or set to the event's own values. The exception, ``RolloutRequeued`` (the newest requeue counts:
  a late copy of an older one would undo a newer one), is deduplicated by ``event_id`` in the engine.
- An attempt ends once: its first ``AttemptFinished`` counts, later ones (late results of a timed-out or requeued
  attempt) are ignored, and a heartbeat does not revive an ended attempt.
- Only the newest attempt decides a non-terminal status. A failed, timed-out or unresponsive attempt allows a
  retry when its status is in ``retry_condition`` and its ``sequence_id < max_attempts``: the rollout is then
  ``requeuing`` until a ``RolloutRequeued`` for that attempt puts it back to ``queuing``.

Rollout events and attempt events travel on different topics, so either may arrive first: every fact is stored
as it comes (attempts before their enqueue create a placeholder rollout) and the status is recomputed from all
facts, so the final rows do not depend on the order between topics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
from psycopg.rows import class_row
from psycopg.types.json import Json, set_json_loads

from projections.base import Envelope, Projection
from projections.migrations import load_package_migrations
from schemas import (
    AttemptFinished,
    AttemptHeartbeat,
    AttemptStarted,
    RolloutCancelled,
    RolloutConfig,
    RolloutEnqueued,
    RolloutRequeued,
)
from schemas.topics import ATTEMPTS, ROLLOUTS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

RolloutEvent = (
    RolloutEnqueued | RolloutCancelled | RolloutRequeued | AttemptStarted | AttemptHeartbeat | AttemptFinished
)
_ATTEMPT_EVENTS = frozenset({AttemptStarted, AttemptHeartbeat, AttemptFinished})
ENDED = frozenset({"succeeded", "failed", "timeout", "unresponsive", "cancelled"})
RETRYABLE = frozenset({"failed", "timeout", "unresponsive"})


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


@dataclass
class State:
    """The rows a batch touches, loaded before the fold and written back after it."""

    rollouts: dict[str, RolloutRow]
    attempts: dict[str, AttemptRow]
    #: configs of the rollouts enqueued by this batch, as the events carried them (no need to parse them back)
    configs: dict[str, RolloutConfig] = field(default_factory=dict)


# -- the fold (pure) ----------------------------------------------------------------------------------------
def fold(state: State, event: RolloutEvent) -> None:
    """Record one event's facts in ``state``; statuses are derived afterwards by :func:`derive`."""
    row = state.rollouts.get(event.rollout_id)
    if row is None:  # not setdefault: that would build a row for every event
        row = state.rollouts[event.rollout_id] = RolloutRow(event.rollout_id)
    # ``type(...) is`` rather than isinstance: event classes are final, and this runs for every event.
    kind = type(event)
    if kind is AttemptHeartbeat or kind is AttemptStarted or kind is AttemptFinished:
        _fold_attempt(state, event)  # type: ignore[arg-type]
    elif isinstance(event, RolloutEnqueued):
        if not row.enqueued:  # creation is idempotent: the first enqueue of an id wins
            row.enqueued, row.input, row.mode = True, event.input, event.mode
            row.resources_id, row.priority, row.enqueued_at = event.resources_id, event.priority, event.occurred_at
            row.config, row.metadata = event.config.model_dump(mode="json"), event.metadata
            state.configs[event.rollout_id] = event.config
    elif isinstance(event, RolloutCancelled):
        row.cancelled_at = _earliest(row.cancelled_at, event.occurred_at)
    elif isinstance(event, RolloutRequeued):
        row.requeued_after = event.after_attempt_id


def _fold_attempt(state: State, event: AttemptStarted | AttemptHeartbeat | AttemptFinished) -> None:
    attempt = state.attempts.get(event.attempt_id)
    if attempt is None:
        attempt = state.attempts[event.attempt_id] = AttemptRow(event.attempt_id, event.rollout_id)
    if type(event) is AttemptHeartbeat:
        attempt.last_heartbeat_time = _latest(attempt.last_heartbeat_time, event.occurred_at)
        attempt.worker_id = attempt.worker_id or event.worker_id
        if attempt.status == "preparing":
            attempt.status = "running"
    elif type(event) is AttemptStarted:
        attempt.sequence_id, attempt.metadata = event.sequence_id, event.metadata
        attempt.worker_id = event.worker_id or attempt.worker_id
        attempt.start_time = _earliest(attempt.start_time, event.occurred_at)
    elif type(event) is AttemptFinished and attempt.status not in ENDED:  # late results are ignored
        attempt.status, attempt.end_time = event.status, event.occurred_at
        attempt.error = None if event.error is None else event.error.model_dump(mode="json")


def _earliest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b < a else a


def _latest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _retry_allowed(attempt: AttemptRow, config: RolloutConfig) -> bool:
    return (
        attempt.status in config.retry_condition
        and attempt.sequence_id is not None
        and attempt.sequence_id < config.max_attempts
    )


def _terminal(row: RolloutRow, attempts: list[AttemptRow], config: RolloutConfig) -> tuple[str, datetime] | None:
    """The first terminal moment: a cancel, or the first attempt whose end leaves no retry."""
    candidates: list[tuple[datetime, str]] = []
    if row.cancelled_at is not None:
        candidates.append((row.cancelled_at, "cancelled"))
    for attempt in attempts:
        if attempt.status not in ENDED or attempt.end_time is None:
            break
        if attempt.status in ("succeeded", "cancelled"):
            candidates.append((attempt.end_time, attempt.status))
            break
        if not _retry_allowed(attempt, config):
            candidates.append((attempt.end_time, "failed"))
            break
    if not candidates:
        return None
    when, status = min(candidates)
    return status, when


_DEFAULT_CONFIG = RolloutConfig()
#: Validated configs by their canonical JSON: a batch derives thousands of rollouts that share a few configs.
_CONFIGS: dict[bytes, RolloutConfig] = {}


def _config(raw: Any) -> RolloutConfig:
    if not raw:
        return _DEFAULT_CONFIG
    key = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    config = _CONFIGS.get(key)
    if config is None:
        config = RolloutConfig.model_validate(raw)
        if len(_CONFIGS) < 1024:  # bounded: configs are chosen per rollout by users
            _CONFIGS[key] = config
    return config


def derive(row: RolloutRow, attempts: list[AttemptRow], config: RolloutConfig | None = None) -> None:
    """Set the rollout's status and summary fields from its facts (``attempts`` of this rollout only).

    ``config``: the rollout's config when at hand as an object, else it is read from ``row.config``.
    """
    ordered = sorted((a for a in attempts if a.sequence_id is not None), key=lambda a: a.sequence_id or 0)
    config = config or _config(row.config)
    row.attempt_count = len(ordered)
    row.latest_attempt_id = ordered[-1].attempt_id if ordered else None
    starts = [a.start_time for a in ordered if a.start_time is not None]
    row.start_time = min(starts) if starts else None
    terminal = _terminal(row, ordered, config)
    if terminal is not None:
        row.status, row.end_time = terminal
        return
    row.end_time = None
    if not ordered:
        row.status = "queuing"
        return
    newest = ordered[-1]
    if newest.status in ("preparing", "running"):
        row.status = newest.status
    else:  # ended with a retry allowed (anything else is terminal)
        row.status = "queuing" if row.requeued_after == newest.attempt_id else "requeuing"


def fold_all(state: State, events: Sequence[RolloutEvent]) -> set[str]:
    """Fold ``events`` in order and derive the statuses of the rollouts they touch; return those ids."""
    touched: set[str] = set()
    for event in events:
        fold(state, event)
        touched.add(event.rollout_id)
    by_rollout: dict[str, list[AttemptRow]] = {}
    for attempt in state.attempts.values():
        by_rollout.setdefault(attempt.rollout_id, []).append(attempt)
    configs = state.configs
    for rollout_id in touched:
        derive(state.rollouts[rollout_id], by_rollout.get(rollout_id, []), configs.get(rollout_id))
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
            f"SELECT {', '.join(_ROLLOUT_COLS)} FROM rollouts WHERE rollout_id = ANY(%s)",  # noqa: S608
            (rollout_ids,),
        )
        rollouts = {r.rollout_id: r for r in await cur.fetchall()}
    async with conn.cursor(row_factory=class_row(AttemptRow)) as cur:
        set_json_loads(orjson.loads, cur)
        await cur.execute(
            f"SELECT {', '.join(_ATTEMPT_COLS)} FROM attempts WHERE rollout_id = ANY(%s)",  # noqa: S608
            (rollout_ids,),
        )
        attempts = {a.attempt_id: a for a in await cur.fetchall()}
    return State(rollouts, attempts)


async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    """Load the touched rollouts, fold the batch into them, write them back (one statement per table)."""
    # The engine hands over only the event types this projection declares (``event_types`` below).
    events = cast("list[RolloutEvent]", [e.event for e in envelopes])
    state = await load_state(conn, sorted({e.rollout_id for e in events}))
    touched = fold_all(state, events)
    touched_attempts = {e.attempt_id for e in events if type(e) in _ATTEMPT_EVENTS}  # type: ignore[union-attr]
    await _upsert(conn, "rollouts", _ROLLOUT_COLS, [state.rollouts[i] for i in sorted(touched)])
    await _upsert(conn, "attempts", _ATTEMPT_COLS, [state.attempts[i] for i in sorted(touched_attempts)])


# -- read queries (run with search_path at the active generation) --------------------------------------------------
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
    where = (
        "(cardinality(%(status)s::text[]) = 0 OR status = ANY(%(status)s)) "
        "AND (%(mode)s::text IS NULL OR mode = %(mode)s) "
        "AND (cardinality(%(ids)s::text[]) = 0 OR rollout_id = ANY(%(ids)s))"
    )
    params = {"status": list(status), "mode": mode, "ids": list(rollout_ids), "limit": limit, "offset": offset}
    cur = await conn.execute(f"SELECT count(*) FROM rollouts WHERE {where}", params)  # noqa: S608
    total_row = await cur.fetchone()
    async with conn.cursor(row_factory=class_row(RolloutRow)) as rows:
        await rows.execute(
            f"SELECT {', '.join(_ROLLOUT_COLS)} FROM rollouts WHERE {where} "  # noqa: S608
            "ORDER BY enqueued_at NULLS LAST, rollout_id LIMIT %(limit)s OFFSET %(offset)s",
            params,
        )
        return await rows.fetchall(), int(total_row[0]) if total_row else 0


async def get_rollout(conn: AsyncConnection[Any], rollout_id: str) -> tuple[RolloutRow, list[AttemptRow]] | None:
    """One rollout and its attempts in sequence order, or ``None``."""
    state = await load_state(conn, [rollout_id])
    row = state.rollouts.get(rollout_id)
    if row is None:
        return None
    return row, sorted(state.attempts.values(), key=lambda a: (a.sequence_id is None, a.sequence_id or 0))


PROJECTION = Projection(
    name="rollouts",
    version=1,
    topics=(ROLLOUTS, ATTEMPTS),
    event_types=frozenset(
        {RolloutEnqueued, RolloutCancelled, RolloutRequeued, AttemptStarted, AttemptHeartbeat, AttemptFinished}
    ),
    migrations=tuple(load_package_migrations("projections", "sql/rollouts")),
    apply=apply,
    tables=("rollouts", "attempts"),
    idempotent_types=frozenset({RolloutEnqueued, RolloutCancelled, AttemptStarted, AttemptHeartbeat, AttemptFinished}),
    per_key_ordering=True,
    description="rollouts and their attempts, with a derived status (GET /v1/rollouts)",
)
