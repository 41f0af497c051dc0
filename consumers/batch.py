"""One batch, one transaction: lock positions, drop what was applied, decode, dedupe, apply, park, store positions.

The order inside the transaction is what makes the effect exactly-once:

1. lock this projection's position rows of the batch's partitions (``FOR UPDATE``): a second instance holding the
   same partitions during a rebalance waits here, then sees the advanced positions;
2. drop records below the stored positions (redelivered after a crash or a rebalance), then, for projections
   that ``lock_keys``, lock each record key (advisory locks, in one global order): whatever instance folds an
   entity waits for any other batch of that entity (an overlap during a rebalance, a second topic) to commit;
3. skip event types the projection does not read, park undecodable records (decoding itself needs no database:
   ``decode_records`` runs before the transaction, while the previous batch is in PostgreSQL);
4. drop events whose ``event_id`` was already applied (a re-published event), except those of the types the
   projection applies idempotently, for which a second copy has no effect anyway;
5. apply in savepoints, splitting the batch to isolate an event that apply rejects, which is parked;
6. store the next offsets, then commit. Nothing is committed to Kafka: PostgreSQL holds the true positions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from consumers.errors import GenerationChanged, is_retriable
from projections.applied import notify_applied
from projections.base import Envelope, Projection
from projections.dead_letters import Parked, has_parked, park, parked_keys
from projections.tracking import (
    Generation,
    TopicPartitionKey,
    ensure_position_rows,
    generation_state,
    lock_positions,
    save_positions,
    set_search_path,
)
from schemas import EVENT_BY_TYPE, DecodeError, Event, UnknownEventType, decode
from schemas.codec import headers_dict

if TYPE_CHECKING:
    from uuid import UUID

    from psycopg import AsyncConnection


class Record(Protocol):
    """What the batch needs of a consumed record (aiokafka's ``ConsumerRecord`` has it)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass
class BatchOutcome:
    applied: int = 0
    redelivered: int = 0
    skipped: int = 0
    duplicates: int = 0
    parked: int = 0
    positions: dict[TopicPartitionKey, int] = field(default_factory=dict)
    #: records handled per partition (applied, skipped, parked or redelivered)
    counts: dict[TopicPartitionKey, int] = field(default_factory=dict)


class Decoded(NamedTuple):
    """A record's decoding, done before the batch's transaction (it needs no database)."""

    headers: tuple[tuple[str, bytes], ...]
    type_name: str | None
    #: of a known type the projection does not read (not parsed)
    unread: bool
    #: the event, the error that parks the record, or ``None`` (unread, or a raw projection)
    result: Event | DecodeError | None
    #: the record as ``apply`` receives it, when it is one the projection reads (else empty): one envelope, or one
    #: per member of an event that stands for several (``Event.members``), all at the record's position
    envelopes: tuple[Envelope, ...]


def decode_records(projection: Projection, records: Sequence[Record]) -> list[Decoded]:
    """Decode ``records`` for ``projection``: pure CPU work, so the worker overlaps it with the previous batch."""
    out: list[Decoded] = []
    wants, raw, grouped = projection.wants, projection.raw, projection.member_type_names
    for r in records:
        headers = tuple(r.headers)
        try:
            parsed: dict[str, str] | None = headers_dict(headers)
        except DecodeError:
            parsed = None  # a header that is not UTF-8: decode() says so
        type_name = (parsed.get("ce_type") or None) if parsed is not None else _type_header(headers)
        result: Event | DecodeError | None = None
        unread = type_name in EVENT_BY_TYPE and not wants(type_name)
        envelopes: tuple[Envelope, ...] = ()
        if not unread:
            if not raw:
                try:
                    result = decode(r.value, headers, parsed_headers=parsed)
                except DecodeError as e:
                    result = e
            event = result if isinstance(result, Event) else None
            if event is not None and event.type in grouped:
                envelopes = tuple(
                    Envelope(r.topic, r.partition, r.offset, r.key, r.timestamp, member, r.value, headers)
                    for member in event.members()
                )
            elif raw or (event is not None and wants(event.type)):
                envelopes = (Envelope(r.topic, r.partition, r.offset, r.key, r.timestamp, event, r.value, headers),)
        out.append(Decoded(headers, type_name, unread, result, envelopes))
    return out


class BatchProcessor:
    """Applies batches of records of ``projection`` to ``generation``'s tables (see the module docstring)."""

    def __init__(self, projection: Projection, generation: Generation, *, check_generation: bool = True) -> None:
        self.projection = projection
        self.generation = generation
        self.consumer_key = generation.schema
        #: The live worker checks that its generation is still the one it should write (a rebuild may switch).
        self.check_generation = check_generation

    async def process(
        self,
        conn: AsyncConnection[Any],
        records: Sequence[Record],
        *,
        decoded: Sequence[Decoded] | None = None,
        rates: dict[TopicPartitionKey, float] | None = None,
    ) -> BatchOutcome:
        """Apply ``records`` in one transaction; ``decoded`` is ``decode_records(projection, records)`` if done.

        Records of a partition are in offset order; partitions may interleave.
        """
        if decoded is None:
            decoded = decode_records(self.projection, records)
        outcome = BatchOutcome()
        runs = _runs(records)
        async with conn.transaction():
            await set_search_path(conn, self.generation.schema, local=True)
            stored = await lock_positions(conn, self.consumer_key, runs)
            if stored.keys() != runs.keys():
                await ensure_position_rows(conn, self.consumer_key, runs.keys() - stored.keys())
                stored = await lock_positions(conn, self.consumer_key, runs)
            if self.check_generation and await generation_state(conn, self.generation) != self.generation.state:
                raise GenerationChanged(f"{self.generation.schema} is no longer {self.generation.state}")
            fresh_records, fresh_decoded = _from_stored(records, decoded, runs, stored)
            outcome.redelivered = len(records) - len(fresh_records)
            if self.projection.lock_keys:
                await lock_keys(conn, self.generation.schema, (r.key for r in fresh_records))
            envelopes, parked = await self._sort(conn, fresh_records, fresh_decoded, outcome)
            envelopes = await self._dedupe(conn, envelopes, outcome)
            before = len(parked)
            # Keys parked while decoding already held back their later records, so apply starts unblocked.
            await self._apply_split(conn, envelopes, parked, set())
            await park(conn, self.generation, parked)
            outcome.parked = len(parked)
            outcome.applied = len(envelopes) - (len(parked) - before)
            positions = _next_positions(records, runs, stored)
            await save_positions(conn, self.consumer_key, positions, rates or {})
            outcome.positions = {tp: pos for tp, (pos, _) in positions.items()}
            outcome.counts = {tp: count for tp, (_, _, count) in runs.items()}
        # After the commit, not inside it (see notify_applied): wakes the API's reads waiting for these positions.
        await notify_applied(conn, self.generation.schema)
        return outcome

    async def _sort(
        self,
        conn: AsyncConnection[Any],
        records: list[Record],
        decoded: list[Decoded],
        outcome: BatchOutcome,
    ) -> tuple[list[Envelope], list[Parked]]:
        """Envelopes to apply, and records parked for decoding or for a blocked key (in log order)."""
        per_key = self.projection.per_key_ordering
        blocked: set[bytes] = set()
        if per_key and await has_parked(conn, self.generation):
            blocked = await parked_keys(conn, self.generation, list({r.key for r in records if r.key is not None}))
        envelopes: list[Envelope] = []
        parked: list[Parked] = []
        for r, (_, type_name, unread, result, found) in zip(records, decoded, strict=True):
            if blocked and r.key in blocked and not unread:  # only per-key projections block keys
                parked.append(_parked(r, "blocked", "an earlier record of this key is parked", type_name))
                continue
            if found:
                envelopes.extend(found)
                continue
            if not isinstance(result, DecodeError):
                outcome.skipped += 1  # of a type this projection does not read (known ones were not even parsed)
                continue
            reason = "unknown_type" if isinstance(result, UnknownEventType) else "decode"
            parked.append(_parked(r, reason, f"{type(result).__name__}: {result}", type_name))
            if per_key and r.key is not None:
                blocked.add(r.key)
        return envelopes, parked

    async def _dedupe(
        self, conn: AsyncConnection[Any], envelopes: list[Envelope], outcome: BatchOutcome
    ) -> list[Envelope]:
        """Drop events whose ``event_id`` was applied before, or appears earlier in this batch (first copy wins).

        Events of the projection's ``idempotent_types`` pass untracked: applying a copy of one changes nothing.
        """
        if not self.projection.dedupe or self.projection.raw or not envelopes:
            return envelopes
        idempotent = self.projection.idempotent_types
        first: dict[UUID, int] = {}
        for i, envelope in enumerate(envelopes):
            event = envelope.require_event()
            if type(event) not in idempotent:
                first.setdefault(event.event_id, i)
        if not first:
            return envelopes
        unique = list(first.values())
        # The ids travel as one bytea of 16-byte slices and only the already-applied ones come back: a uuid[]
        # parameter and a RETURNING of every new id cost more in Python (dumping, then loading 2 x N uuids)
        # than the whole insert costs in PostgreSQL.
        blob = b"".join(envelopes[i].require_event().event_id.bytes for i in unique)
        cur = await conn.execute(_DEDUPE_SQL, (blob, len(unique)))
        fresh = set(unique) - {unique[row[0]] for row in await cur.fetchall()}
        kept = [e for i, e in enumerate(envelopes) if i in fresh or type(e.event) in idempotent]
        outcome.duplicates = len(envelopes) - len(kept)
        return kept

    async def _apply_split(
        self, conn: AsyncConnection[Any], envelopes: list[Envelope], parked: list[Parked], blocked: set[bytes]
    ) -> None:
        """Apply in a savepoint; when apply rejects the batch, halve it until the rejected event is alone."""
        if blocked:
            held = [e for e in envelopes if e.key is not None and e.key in blocked]
            parked.extend(_parked_envelope(e, "blocked", "an earlier record of this key is parked") for e in held)
            envelopes = [e for e in envelopes if e.key is None or e.key not in blocked]
        if not envelopes:
            return
        try:
            async with conn.transaction():
                await self.projection.apply(envelopes, conn)
        except Exception as e:
            if is_retriable(e):
                raise
            if len(envelopes) == 1:
                parked.append(_parked_envelope(envelopes[0], "apply", f"{type(e).__name__}: {e}"))
                if self.projection.per_key_ordering and envelopes[0].key is not None:
                    blocked.add(envelopes[0].key)
                return
        else:
            return
        middle = len(envelopes) // 2
        await self._apply_split(conn, envelopes[:middle], parked, blocked)
        await self._apply_split(conn, envelopes[middle:], parked, blocked)


def key_lock_ids(namespace: str, keys: Iterable[bytes | None]) -> list[int]:
    """Advisory lock ids of the distinct keys, sorted: every transaction takes them in the same order.

    64-bit ids from a hash of the namespace (the generation's schema) and the key: ``hashtext`` gives 32 bits,
    and a collision would only make two entities wait for each other, but sorting by id (not by key) is what
    keeps colliding keys from deadlocking.
    """
    prefix = namespace.encode() + b"\0"
    ids = {
        int.from_bytes(hashlib.blake2b(prefix + key, digest_size=8).digest(), "big", signed=True)
        for key in keys
        if key is not None
    }
    return sorted(ids)


async def lock_keys(conn: AsyncConnection[Any], namespace: str, keys: Iterable[bytes | None]) -> None:
    """Take a transaction-scoped advisory lock per distinct key, in id order (unnest yields in array order)."""
    ids = key_lock_ids(namespace, keys)
    if ids:
        await conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", (ids,))


#: Insert the batch's ids; return the positions (0-based, in the blob) of those that were already there.
_DEDUPE_SQL = """
WITH ids AS MATERIALIZED (
    SELECT i, encode(substring(%b::bytea FROM i * 16 + 1 FOR 16), 'hex')::uuid AS event_id
    FROM generate_series(0, %s::int - 1) AS i
), inserted AS (
    INSERT INTO applied_events (event_id) SELECT event_id FROM ids ON CONFLICT DO NOTHING RETURNING event_id
)
SELECT ids.i FROM ids LEFT JOIN inserted USING (event_id) WHERE inserted.event_id IS NULL
"""


def _type_header(headers: tuple[tuple[str, bytes], ...]) -> str | None:
    for name, value in headers:
        if name == "ce_type":
            return value.decode(errors="replace") if value else None
    return None


def _runs(records: Sequence[Record]) -> dict[TopicPartitionKey, tuple[int, int, int]]:
    """Per partition: the index of its first and of its last record in ``records``, and its record count."""
    runs: dict[TopicPartitionKey, tuple[int, int, int]] = {}
    # Records come in runs of one partition: compare neighbours instead of hashing every record's partition.
    start = 0
    for i in range(1, len(records) + 1):
        if (
            i == len(records)
            or records[i].partition != records[start].partition
            or records[i].topic != records[start].topic
        ):
            tp = (records[start].topic, records[start].partition)
            first, _, count = runs.get(tp, (start, 0, 0))
            runs[tp] = (first, i - 1, count + i - start)
            start = i
    return runs


def _next_positions(
    records: Sequence[Record], runs: dict[TopicPartitionKey, tuple[int, int, int]], stored: dict[TopicPartitionKey, int]
) -> dict[TopicPartitionKey, tuple[int, int | None]]:
    """Per partition: the offset after its last record, and that record's timestamp (unless all were applied)."""
    out: dict[TopicPartitionKey, tuple[int, int | None]] = {}
    for tp, (_, last, _) in runs.items():
        after = records[last].offset + 1
        out[tp] = (after, records[last].timestamp) if after > stored[tp] else (stored[tp], None)
    return out


def _from_stored(
    records: Sequence[Record],
    decoded: Sequence[Decoded],
    runs: dict[TopicPartitionKey, tuple[int, int, int]],
    stored: dict[TopicPartitionKey, int],
) -> tuple[list[Record], list[Decoded]]:
    """The records at or after their partition's stored position (the others were applied before)."""
    if all(records[first].offset >= stored[tp] for tp, (first, _, _) in runs.items()):
        return list(records), list(decoded)  # nothing redelivered: the usual case
    pairs = [(r, d) for r, d in zip(records, decoded, strict=True) if r.offset >= stored[(r.topic, r.partition)]]
    return [r for r, _ in pairs], [d for _, d in pairs]


def _parked(r: Record, reason: Any, error: str, type_name: str | None) -> Parked:
    return Parked(r.topic, r.partition, r.offset, r.key, reason, error, r.value, tuple(r.headers), None, type_name)


def _parked_envelope(e: Envelope, reason: Any, error: str) -> Parked:
    event = e.event
    return Parked(
        e.topic, e.partition, e.offset, e.key, reason, error, e.value, e.headers,
        None if event is None else event.event_id, None if event is None else event.type,
    )  # fmt: skip
