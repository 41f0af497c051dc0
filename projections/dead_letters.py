"""Dead letters: records a projection could not apply, parked so that their partition keeps flowing.

Reasons: ``decode`` (not a valid event), ``unknown_type`` (a type or version this code does not know), ``apply``
(apply raised a non-retriable error) and ``blocked`` (an earlier event of the same key is parked and the projection
declares per-key ordering). ``replay`` applies parked records again, in log order, through the projection's
``apply``; one that still fails stays parked with its new error.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from projections.base import Envelope
from projections.tracking import Generation, set_search_path
from schemas import DecodeError, decode

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from projections.base import Projection

Reason = Literal["decode", "unknown_type", "apply", "blocked"]


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

    def header_pairs(self) -> tuple[tuple[str, bytes], ...]:
        return tuple((name, base64.b64decode(value)) for name, value in self.headers)


def _encode_headers(headers: Sequence[tuple[str, bytes]]) -> Jsonb:
    # Header values are arbitrary bytes; base64 keeps them exact inside jsonb.
    return Jsonb([[name, base64.b64encode(value or b"").decode()] for name, value in headers])


async def park(conn: AsyncConnection[Any], gen: Generation, records: Sequence[Parked]) -> None:
    """Store ``records`` (idempotent: a record parked twice keeps its first row)."""
    if not records:
        return
    rows = [
        (gen.projection, gen.generation, r.topic, r.partition, r.offset, r.key, r.event_id, r.event_type,
         r.reason, r.error[:4000], r.payload, _encode_headers(r.headers))
        for r in records
    ]  # fmt: skip
    async with conn.cursor() as cur:
        await cur.executemany(
            'INSERT INTO public.dead_letters (projection, generation, topic, partition, "offset", key, event_id, '
            "event_type, reason, error, payload, headers) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            rows,
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
    "headers, status, created_at, resolved_at"
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
            'ORDER BY projection, topic, partition, "offset" LIMIT %(l)s',
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


async def replay(
    conn: AsyncConnection[Any], projection: Projection, gen: Generation, ids: Sequence[int] | None = None
) -> ReplayResult:
    """Apply parked records again, in log order; those that fail again stay parked (with the new error).

    With per-key ordering, a record whose key still has an earlier parked record stays parked behind it.
    """
    result = ReplayResult()
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT id FROM public.dead_letters WHERE projection = %s AND generation = %s AND status = 'parked' "
            'AND (%s::bigint[] IS NULL OR id = ANY(%s)) ORDER BY topic, partition, "offset" FOR UPDATE',
            (gen.projection, gen.generation, None if ids is None else list(ids), None if ids is None else list(ids)),
        )
        letter_ids = [int(row[0]) for row in await cur.fetchall()]
        blocked: set[bytes] = set()
        for letter_id in letter_ids:
            letter = await get_dead_letter(conn, letter_id)
            assert letter is not None
            error = await _replay_one(conn, projection, gen, letter, blocked)
            if error is None:
                result.replayed += 1
                await conn.execute(
                    "UPDATE public.dead_letters SET status = 'replayed', resolved_at = now() WHERE id = %s",
                    (letter_id,),
                )
            else:
                result.still_parked += 1
                if projection.per_key_ordering and letter.key is not None:
                    blocked.add(bytes(letter.key))
                await conn.execute("UPDATE public.dead_letters SET error = %s WHERE id = %s", (error, letter_id))
    return result


async def _replay_one(
    conn: AsyncConnection[Any], projection: Projection, gen: Generation, letter: DeadLetter, blocked: set[bytes]
) -> str | None:
    """Apply one dead letter inside a savepoint; return the error text if it fails again."""
    if letter.key is not None and bytes(letter.key) in blocked:
        return "an earlier record of this key is still parked"
    headers = letter.header_pairs()
    try:
        event = None if projection.raw else decode(letter.payload, headers)
    except DecodeError as e:
        return f"{type(e).__name__}: {e}"
    envelope = Envelope(letter.topic, letter.partition, letter.offset, letter.key, 0, event, letter.payload, headers)
    try:
        async with conn.transaction():
            await set_search_path(conn, gen.schema, local=True)
            await projection.apply([envelope], conn)
    except Exception as e:  # noqa: BLE001 - whatever apply raises keeps the record parked, with the reason
        return f"{type(e).__name__}: {e}"
    return None
