"""Dead letters: records a projection could not apply, parked so that their partition keeps flowing.

Reasons: ``decode`` (not a valid event), ``unknown_type`` (a type or version this code does not know), ``apply``
(apply raised a non-retriable error) and ``blocked`` (an earlier event of the same key is parked and the projection
declares per-key ordering). ``replay`` applies parked records again, in park order (the order the engine met them,
across topics), through the projection's ``apply``; one that still fails stays parked with its new error.
``discard`` closes a letter for good, with who and why, so that one bad event does not block its key for ever.

Parking never fails on the record's own bytes: text columns get sanitised copies, the bytes stay exact in ``key``,
``payload`` and the base64 headers (``projections.safe_text``).

The event-id ledger (``applied_events``) holds the ids of applied events. Parking by apply takes the event's id out
again (the engine put it in before applying), and a replay puts it back: a replayed event whose id was applied
meanwhile (a re-published copy) is not applied a second time, and a copy that comes after the replay is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from projections.base import Envelope
from projections.errors import ProjectionError
from projections.safe_text import decode_headers, encode_headers, safe_text
from projections.tracking import Generation, set_search_path
from schemas import DecodeError, Event, decode

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from projections.base import Projection

Reason = Literal["decode", "unknown_type", "apply", "blocked"]


class DeadLetterNotFound(ProjectionError):
    """No parked dead letter with that id (it does not exist, or was replayed or discarded already)."""

    exit_code = 2


@dataclass(frozen=True)
class Parked:
    """A record to park, as the engine hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    reason: Reason
    error: str
    payload: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    event_id: UUID | None = None
    event_type: str | None = None


@dataclass
class DeadLetter:
    """A stored dead letter."""

    id: int
    projection: str
    generation: int
    topic: str
    partition: int
    offset: int
    key: bytes | None
    event_id: UUID | None
    event_type: str | None
    reason: str
    error: str
    payload: bytes | None
    headers: Any
    status: str
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None

    def header_pairs(self) -> tuple[tuple[str, bytes], ...]:
        return tuple(decode_headers(self.headers))


def _in_log_order(records: Sequence[Parked]) -> list[Parked]:
    """``records`` with each partition's records in offset order, each partition keeping the places it had.

    The engine hands over decode and blocked parkings before apply parkings; within a partition the offset is the
    log order, which park order (the ``id``) must follow for replay to keep per-key order.
    """
    by_partition: dict[tuple[str, int], list[Parked]] = {}
    for r in records:
        by_partition.setdefault((r.topic, r.partition), []).append(r)
    sorted_runs = {tp: iter(sorted(rs, key=lambda r: r.offset)) for tp, rs in by_partition.items()}
    return [next(sorted_runs[(r.topic, r.partition)]) for r in records]


async def park(conn: AsyncConnection[Any], gen: Generation, records: Sequence[Parked]) -> None:
    """Store ``records`` (idempotent: a record parked twice keeps its first row).

    Call it in the batch's transaction, after apply: an event parked by apply leaves the event-id ledger again.
    """
    if not records:
        return
    rows = [
        (gen.projection, gen.generation, r.topic, r.partition, r.offset, r.key, r.event_id,
         None if r.event_type is None else safe_text(r.event_type), r.reason, safe_text(r.error[:4000]), r.payload,
         Jsonb(encode_headers(r.headers)))
        for r in _in_log_order(records)
    ]  # fmt: skip
    async with conn.cursor() as cur:
        await cur.executemany(
            'INSERT INTO public.dead_letters (projection, generation, topic, partition, "offset", key, event_id, '
            "event_type, reason, error, payload, headers) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            rows,
        )
    # The engine enters an event's id into the ledger before applying it (a copy later in the batch is then a
    # duplicate). An event that apply rejected was not applied, nor one parked behind it in the same batch (only
    # those carry their id: records parked before the ledger was asked carry none): their ids must not make a
    # later copy, or their own replay, look applied.
    rejected = [r.event_id for r in records if r.reason in ("apply", "blocked") and r.event_id is not None]
    if rejected:
        await conn.execute(
            sql.SQL("DELETE FROM {}.applied_events WHERE event_id = ANY(%s)").format(sql.Identifier(gen.schema)),
            (rejected,),
        )


async def has_parked(conn: AsyncConnection[Any], gen: Generation) -> bool:
    """Whether ``gen`` has any parked record: usually not, and one index probe then saves asking per key."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT FROM public.dead_letters WHERE projection = %s AND generation = %s "
        "AND status = 'parked')",
        (gen.projection, gen.generation),
    )
    row = await cur.fetchone()
    return row is not None and bool(row[0])


async def parked_keys(conn: AsyncConnection[Any], gen: Generation, keys: Sequence[bytes]) -> set[bytes]:
    """Which of ``keys`` have a parked record (so later records of them must park behind it)."""
    if not keys:
        return set()
    cur = await conn.execute(
        "SELECT DISTINCT key FROM public.dead_letters WHERE projection = %s AND generation = %s "
        "AND status = 'parked' AND key = ANY(%s)",
        (gen.projection, gen.generation, list(keys)),
    )
    return {bytes(row[0]) for row in await cur.fetchall()}


_COLUMNS = (
    'id, projection, generation, topic, partition, "offset", key, event_id, event_type, reason, error, payload, '
    "headers, status, created_at, resolved_at, resolved_by, resolution"
)


async def list_dead_letters(
    conn: AsyncConnection[Any], projection: str | None = None, *, status: str | None = "parked", limit: int = 100
) -> list[DeadLetter]:
    async with conn.cursor(row_factory=class_row(DeadLetter)) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM public.dead_letters "  # noqa: S608 - constant column list
            "WHERE (%(p)s::text IS NULL OR projection = %(p)s) AND (%(s)s::text IS NULL OR status = %(s)s) "
            "AND generation = (SELECT generation FROM projection_generations g "
            "  WHERE g.projection = dead_letters.projection AND g.state = 'active') "
            "ORDER BY projection, id LIMIT %(l)s",
            {"p": projection, "s": status, "l": limit},
        )
        return await cur.fetchall()


async def get_dead_letter(conn: AsyncConnection[Any], letter_id: int) -> DeadLetter | None:
    async with conn.cursor(row_factory=class_row(DeadLetter)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM public.dead_letters WHERE id = %s", (letter_id,))  # noqa: S608
        return await cur.fetchone()


async def count_parked(conn: AsyncConnection[Any], gen: Generation) -> dict[tuple[str, int], int]:
    cur = await conn.execute(
        "SELECT topic, partition, count(*) FROM public.dead_letters WHERE projection = %s AND generation = %s "
        "AND status = 'parked' GROUP BY topic, partition",
        (gen.projection, gen.generation),
    )
    return {(t, p): int(n) for t, p, n in await cur.fetchall()}


@dataclass
class ReplayResult:
    replayed: int = 0
    still_parked: int = 0
    #: events whose id the projection had applied meanwhile (a copy): closed without applying them again
    already_applied: int = 0


async def replay(
    conn: AsyncConnection[Any],
    projection: Projection,
    gen: Generation,
    ids: Sequence[int] | None = None,
    *,
    by: str = "replay",
) -> ReplayResult:
    """Apply parked records again, in park order; those that fail again stay parked (with the new error).

    Park order is the order the engine met the records in, across topics: a key whose events live on two topics
    (a rollout's enqueue and its attempts) keeps its order, which topic-then-partition order would break. With
    per-key ordering, a record whose key still has an earlier parked record stays parked behind it.
    """
    result = ReplayResult()
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT id FROM public.dead_letters WHERE projection = %s AND generation = %s AND status = 'parked' "
            "AND (%s::bigint[] IS NULL OR id = ANY(%s)) ORDER BY id FOR UPDATE",
            (gen.projection, gen.generation, None if ids is None else list(ids), None if ids is None else list(ids)),
        )
        letter_ids = [int(row[0]) for row in await cur.fetchall()]
        blocked: set[bytes] = set()
        for letter_id in letter_ids:
            letter = await get_dead_letter(conn, letter_id)
            assert letter is not None
            outcome, error = await _replay_one(conn, projection, gen, letter, blocked)
            if outcome != "failed":
                duplicate = outcome == "already_applied"
                result.already_applied += duplicate
                result.replayed += not duplicate
                await conn.execute(
                    "UPDATE public.dead_letters SET status = %s, resolved_at = now(), resolved_by = %s, "
                    "resolution = %s WHERE id = %s",
                    (
                        "discarded" if duplicate else "replayed",
                        safe_text(by),
                        "its event id was already applied (a copy); not applied again" if duplicate else "replayed",
                        letter_id,
                    ),
                )
            else:
                result.still_parked += 1
                if projection.per_key_ordering and letter.key is not None:
                    blocked.add(bytes(letter.key))
                await conn.execute(
                    "UPDATE public.dead_letters SET error = %s WHERE id = %s", (safe_text(error[:4000]), letter_id)
                )
    return result


_Outcome = Literal["applied", "already_applied", "failed"]


async def _replay_one(
    conn: AsyncConnection[Any], projection: Projection, gen: Generation, letter: DeadLetter, blocked: set[bytes]
) -> tuple[_Outcome, str]:
    """Apply one dead letter inside a savepoint; the outcome, with the error text when it failed again."""
    if letter.key is not None and bytes(letter.key) in blocked:
        return "failed", "an earlier record of this key is still parked"
    headers = letter.header_pairs()
    try:
        event = None if projection.raw else decode(letter.payload, headers)
    except DecodeError as e:
        return "failed", f"{type(e).__name__}: {e}"
    # An event that stands for several reaches the projection as its members, as the engine hands it out: the
    # member that was parked and the others, which the ledger (or the projection's idempotence) lets through once.
    events: list[Event | None] = [event]
    if event is not None and event.type in projection.member_type_names:
        events = list(event.members())
    envelopes = [
        Envelope(letter.topic, letter.partition, letter.offset, letter.key, 0, e, letter.payload, headers)
        for e in events
    ]
    tracked = event is not None and projection.dedupe and not projection.raw
    try:
        async with conn.transaction():
            await set_search_path(conn, gen.schema, local=True)
            if tracked:
                # Through the ledger as the engine goes, the members' ids in one statement: an id enters it with the
                # apply (and leaves with a failure, the savepoint's rollback), so a copy that was applied meanwhile
                # (an id the insert does not return) is not applied again.
                ledgered = [
                    e.require_event().event_id for e in envelopes if type(e.event) not in projection.idempotent_types
                ]
                cur = await conn.execute(
                    "INSERT INTO applied_events (event_id) SELECT unnest(%s::uuid[]) ON CONFLICT DO NOTHING"
                    " RETURNING event_id",
                    (ledgered,),
                )
                entered = {row[0] for row in await cur.fetchall()}
                fresh = [
                    e
                    for e in envelopes
                    if type(e.event) in projection.idempotent_types or e.require_event().event_id in entered
                ]
                if not fresh:
                    return "already_applied", ""
                envelopes = fresh
            await projection.apply(envelopes, conn)
    except Exception as e:  # noqa: BLE001 - whatever apply raises keeps the record parked, with the reason
        return "failed", f"{type(e).__name__}: {e}"
    return "applied", ""


@dataclass
class Discarded:
    letter: DeadLetter
    #: records of the same key still parked (behind it, for a per-key projection: replay applies them now)
    same_key_parked: int


async def discard(conn: AsyncConnection[Any], letter_id: int, *, reason: str, by: str) -> Discarded:
    """Close a parked letter without applying it, recording who and why; its key is no longer blocked by it.

    Raises:
        DeadLetterNotFound: no such letter, or it is not parked (replayed or discarded already).
    """
    if not reason.strip():
        raise DeadLetterNotFound("a discard needs a reason")
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE public.dead_letters SET status = 'discarded', resolved_at = now(), resolved_by = %s, "
            "resolution = %s WHERE id = %s AND status = 'parked' RETURNING id",
            (safe_text(by), safe_text(reason), letter_id),
        )
        if await cur.fetchone() is None:
            found = await get_dead_letter(conn, letter_id)
            raise DeadLetterNotFound(
                f"no dead letter {letter_id}" if found is None else f"dead letter {letter_id} is {found.status}"
            )
        letter = await get_dead_letter(conn, letter_id)
        assert letter is not None
        same_key = 0
        if letter.key is not None:
            cur = await conn.execute(
                "SELECT count(*) FROM public.dead_letters WHERE projection = %s AND generation = %s "
                "AND status = 'parked' AND key = %s",
                (letter.projection, letter.generation, letter.key),
            )
            row = await cur.fetchone()
            same_key = 0 if row is None else int(row[0])
    return Discarded(letter, same_key)
