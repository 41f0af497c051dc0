"""Restore a reset broker log from the event archive, so a restart of the memory-only Tansu broker loses nothing.

The archive projection keeps every record of every event topic, byte for byte, with its partition and offset.
When the broker comes back empty (its meta topic holds no epoch) while PostgreSQL remembers an epoch and the
archive holds records, the records are re-published to the same partitions in offset order. A fresh log starts
at offset 0 and Tansu writes no transaction markers, so every record lands at its old offset (checked record by
record), and the stored consumer positions are valid again. The caller then writes the old epoch marker back, so the
log is recognised as the one the positions belong to. A restore cut short (the broker keeps what was re-published,
as Apache Kafka does) resumes where the broker's log ends, once its last record is found to match the archive.

Before anything is sent, every topic is checked against every witness of what the broker had acknowledged: the
positions of every projection, the positions the command API had confirmed (``command_rollouts``), and the high
watermarks the stack recorded when it stopped, once the archive had caught up with them (``agl.stack.archive_settle``).
Records a witness saw that the archive lacks are lost with the broker; they are reported, never dropped in silence:
the restore refuses unless the caller accepts the loss (``agl up --accept-log-reset``). Then the archive is restored
as it is, the read models that had applied lost records start over from the restored log, and the loss is printed.

The archive itself is never deleted: it is the only copy of the history on Tansu. When a new log must be adopted
(``start_over``), the archive's generation is retired and kept, and a new generation archives the new log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from psycopg import sql

from consumers.watermarks import fetch_watermarks
from core.errors import LogResetError
from projections.safe_text import decode_headers
from projections.tracking import Generation, active_generation, drop_generation

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection

ARCHIVE = "archive"
#: Rows read from PostgreSQL and sent to the broker per round; their deliveries are checked together.
_CHUNK = 5000
#: ``stack_state`` keys: high watermarks seen at the last stop, and when a loss was last accepted.
MARKS_KEY = "archive_watermarks"
_ACCEPTED_KEY = "log_loss_accepted_at"
_KEEPS_ARCHIVE = (
    "The archive is kept either way (it is the only copy of the history on Tansu); `agl up --accept-log-reset` "
    "never deletes it"
)

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class Missing:
    """Records a witness saw acknowledged in a partition that the archive does not hold."""

    topic: str
    partition: int
    archived: int
    acknowledged: int
    witness: str

    def describe(self) -> str:
        return (
            f"{self.topic}[{self.partition}] records {self.archived}..{self.acknowledged - 1} "
            f"({self.acknowledged - self.archived}, seen by {self.witness})"
        )


@dataclass
class RestoreReport:
    epoch: str
    partitions: int = 0
    records: int = 0
    seconds: float = 0.0
    per_topic: dict[str, int] = field(default_factory=dict)
    #: partitions whose restore resumed a log a previous restore had begun: (topic, partition) -> first offset sent
    resumed: dict[TopicPartitionKey, int] = field(default_factory=dict)
    #: records acknowledged once but absent from the archive, accepted as lost by the caller
    lost: list[Missing] = field(default_factory=list)
    #: read models started over because they had applied lost records
    started_over: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = (
            f"restored {self.records} records into {self.partitions} partitions from the archive "
            f"(log epoch {self.epoch}) in {self.seconds:.1f}s"
        )
        if self.resumed:
            text += f"; resumed an earlier restore in {len(self.resumed)} partitions"
        if self.lost:
            lost = sum(m.acknowledged - m.archived for m in self.lost)
            text += f"; LOST {lost} records the archive never received: " + "; ".join(m.describe() for m in self.lost)
        if self.started_over:
            text += f"; started over: {', '.join(self.started_over)}"
        return text


async def stored_log_epoch(conn: AsyncConnection[Any]) -> str | None:
    cur = await conn.execute("SELECT value FROM stack_state WHERE key = 'log_epoch'")
    row = await cur.fetchone()
    return None if row is None else str(row[0])


# -- what the archive holds, and what was acknowledged -----------------------------------------------------------
async def _archived_partitions(
    conn: AsyncConnection[Any], schema: str, topics: Sequence[str]
) -> tuple[dict[TopicPartitionKey, int], list[str]]:
    """Records archived per (topic, partition), and the partitions whose offsets are not 0..n-1 (gaps)."""
    query = sql.SQL(
        'SELECT topic, partition, count(*), min("offset"), max("offset") FROM {}.events '
        "WHERE topic = ANY(%s) GROUP BY 1, 2"
    ).format(sql.Identifier(schema))
    counts: dict[TopicPartitionKey, int] = {}
    gaps: list[str] = []
    for topic, partition, count, first, last in await (await conn.execute(query, (list(topics),))).fetchall():
        counts[(topic, partition)] = count
        if first != 0 or last != count - 1:
            gaps.append(f"{topic}[{partition}] (offsets {first}..{last} hold {count} records)")
    return counts, gaps


async def _witnesses(conn: AsyncConnection[Any], topics: Sequence[str]) -> list[tuple[str, int, int, str]]:
    """(topic, partition, records acknowledged, who says so) from every witness PostgreSQL holds."""
    seen: list[tuple[str, int, int, str]] = []
    cur = await conn.execute(
        "SELECT projection, topic, partition, next_offset FROM projection_offsets WHERE topic = ANY(%s)",
        (list(topics),),
    )
    seen += [(t, p, n, f"{consumer}'s position") for consumer, t, p, n in await cur.fetchall()]
    if await _table_exists(conn, "command_rollouts"):
        # Positions the broker confirmed to the command API; those of a loss accepted before are old news.
        cur = await conn.execute(
            'SELECT topic, "partition", max("offset") + 1 FROM command_rollouts WHERE "offset" IS NOT NULL '
            "AND topic = ANY(%s) AND created_at > coalesce((SELECT (value #>> '{}')::timestamptz FROM stack_state "
            "WHERE key = %s), '-infinity') GROUP BY 1, 2",
            (list(topics), _ACCEPTED_KEY),
        )
        seen += [(t, p, n, "the command API's confirmed positions") for t, p, n in await cur.fetchall()]
    epoch = await stored_log_epoch(conn)
    cur = await conn.execute("SELECT value FROM stack_state WHERE key = %s", (MARKS_KEY,))
    row = await cur.fetchone()
    if row is not None and row[0].get("epoch") == epoch:
        seen += [
            (t, p, n, "the broker's high watermark when the stack stopped")
            for t, p, n in row[0]["marks"]
            if t in topics
        ]
    return seen


async def _table_exists(conn: AsyncConnection[Any], name: str) -> bool:
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{name}",))
    row = await cur.fetchone()
    return row is not None and bool(row[0])


def _missing(archived: dict[TopicPartitionKey, int], seen: list[tuple[str, int, int, str]]) -> list[Missing]:
    """Per partition, the widest range a witness saw beyond the archive's end."""
    worst: dict[TopicPartitionKey, Missing] = {}
    for topic, partition, acknowledged, witness in seen:
        have = archived.get((topic, partition), 0)
        known = worst.get((topic, partition))
        if acknowledged > have and (known is None or acknowledged > known.acknowledged):
            worst[(topic, partition)] = Missing(topic, partition, have, acknowledged, witness)
    return [worst[tp] for tp in sorted(worst)]


# -- the broker side ----------------------------------------------------------------------------------------------
async def log_ends(bootstrap: str, tps: Sequence[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
    """Each partition's high watermark, from fetch responses (Tansu's end offsets are off by a batch)."""
    marks = await fetch_watermarks(bootstrap, dict.fromkeys(tps, 0))
    return {tp: mark.high_watermark for tp, mark in marks.items()}


async def _last_record(bootstrap: str, tp: TopicPartitionKey, offset: int) -> tuple[bytes | None, bytes | None]:
    """Key and value of the record at ``offset`` (the last one of a partly restored partition)."""
    part = TopicPartition(*tp)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([part])
        consumer.seek(part, offset)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for record in (await consumer.getmany(part, timeout_ms=500)).get(part, []):
                if record.offset == offset:
                    return record.key, record.value
        raise LogResetError(f"could not read {tp[0]}[{tp[1]}]@{offset} back from the broker")
    finally:
        await consumer.stop()


async def _check_resumable(
    conn: AsyncConnection[Any], bootstrap: str, schema: str, ends: dict[TopicPartitionKey, int]
) -> None:
    """A partly restored partition must end with the archive's record at that offset."""
    query = sql.SQL('SELECT key, value FROM {}.events WHERE topic = %s AND partition = %s AND "offset" = %s').format(
        sql.Identifier(schema)
    )
    for (topic, partition), end in sorted(ends.items()):
        if end == 0:
            continue
        row = await (await conn.execute(query, (topic, partition, end - 1))).fetchone()
        landed = await _last_record(bootstrap, (topic, partition), end - 1)
        if row is None or (None if row[0] is None else bytes(row[0]), None if row[1] is None else bytes(row[1])) != (
            landed
        ):
            raise LogResetError(
                f"the broker holds {end} records of {topic}[{partition}] with no log epoch, and the last one does "
                "not match the archive, so the log cannot be restored into it. Empty the broker (a restart of Tansu "
                f"does) and run `agl up` again: the restore starts over from the archive. {_KEEPS_ARCHIVE}"
            )


async def _republish(
    conn: AsyncConnection[Any], producer: AIOKafkaProducer, schema: str, tp: TopicPartitionKey, start: int
) -> int:
    topic, part = tp
    query = sql.SQL(
        'SELECT "offset", key, value, headers, (extract(epoch FROM timestamp) * 1000)::bigint '
        'FROM {}.events WHERE topic = %s AND partition = %s AND "offset" >= %s ORDER BY "offset"'
    ).format(sql.Identifier(schema))
    sent = 0
    async with conn.cursor(name=f"restore_{topic}_{part}".replace(".", "_").replace("-", "_")) as cur:
        await cur.execute(query, (topic, part, start))
        while rows := await cur.fetchmany(_CHUNK):
            futures = [
                (
                    offset,
                    await producer.send(
                        topic, value, key=key, partition=part, headers=decode_headers(h), timestamp_ms=ts
                    ),
                )
                for offset, key, value, h, ts in rows
            ]
            for offset, future in futures:
                landed = (await future).offset
                if landed != offset:
                    raise LogResetError(
                        f"restoring {topic}[{part}]: archived offset {offset} landed at {landed}; the restored "
                        "log does not match the archive. Empty the broker (a restart of Tansu does) and run "
                        f"`agl up` again: the restore starts over. {_KEEPS_ARCHIVE}"
                    )
            sent += len(rows)
    return sent


# -- the restore ----------------------------------------------------------------------------------------------------
async def restore_from_archive(
    conn: AsyncConnection[Any], bootstrap: str, topics: Sequence[str], *, accept_loss: bool = False
) -> RestoreReport | None:
    """Re-publish the archive into an empty (or partly restored) log; ``None`` when there is nothing to restore.

    Call it only when the broker's meta topic holds no epoch, and write ``report.epoch`` back as the log's epoch
    marker afterwards. ``topics`` are the full names of the event topics. With ``accept_loss``, records that were
    acknowledged but never archived are accepted as lost (and reported) instead of refused; an archive with gaps
    is then not restored at all (``None``): the caller starts over on the new log, and the archive is kept.

    Raises:
        LogResetError: the archive cannot restore the log exactly; nothing was restored.
    """
    epoch = await stored_log_epoch(conn)
    archive = await active_generation(conn, ARCHIVE)
    if epoch is None or archive is None:
        return None
    archived, gaps = await _archived_partitions(conn, archive.schema, topics)
    missing = _missing(archived, await _witnesses(conn, topics))
    if not archived and not missing:
        return None
    ends = await log_ends(bootstrap, sorted({*archived, *((m.topic, m.partition) for m in missing)}))
    if any(end > archived.get(tp, 0) for tp, end in ends.items()):
        return None  # the broker holds records the archive lacks: not a reset log, the epoch check decides
    if gaps:
        if accept_loss:
            return None
        raise LogResetError(
            "the broker's log was reset and the archive cannot restore it exactly: "
            + "; ".join(gaps)
            + ". `agl up --accept-log-reset` starts the read models over on the new log and keeps this archive as "
            f"{archive.schema} (read-only history), or use the durable Apache Kafka broker. {_KEEPS_ARCHIVE}"
        )
    if missing and not accept_loss:
        lost = sum(m.acknowledged - m.archived for m in missing)
        raise LogResetError(
            f"the broker's log was reset and {lost} acknowledged records never reached the archive: "
            + "; ".join(m.describe() for m in missing)
            + f". They are lost with the broker. `agl up --accept-log-reset` restores the {sum(archived.values())} "
            "archived records and starts over the read models that had applied lost ones, or use the durable "
            f"Apache Kafka broker. {_KEEPS_ARCHIVE}"
        )
    await _check_resumable(conn, bootstrap, archive.schema, ends)
    t0 = time.monotonic()
    report = RestoreReport(epoch=epoch, partitions=len(archived), lost=missing)
    report.resumed = {tp: end for tp, end in ends.items() if end > 0}
    # No idempotence (Tansu refuses it); order per partition holds because aiokafka keeps one batch in flight
    # per partition, and every landed offset is checked anyway.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    try:
        async with conn.transaction():  # the named cursors need one
            for tp in sorted(archived):
                sent = await _republish(conn, producer, archive.schema, tp, ends.get(tp, 0))
                report.per_topic[tp[0]] = report.per_topic.get(tp[0], 0) + sent
                report.records += sent
    finally:
        await producer.stop()
    if missing:
        report.started_over = await _accept_loss(conn, archived, missing)
    report.seconds = time.monotonic() - t0
    return report


async def _accept_loss(
    conn: AsyncConnection[Any], archived: dict[TopicPartitionKey, int], missing: list[Missing]
) -> list[str]:
    """After restoring with a loss: read models beyond the restored log start over; the witnesses are settled."""
    lost = {(m.topic, m.partition) for m in missing}
    cur = await conn.execute("SELECT projection, topic, partition, next_offset FROM projection_offsets")
    beyond = {schema for schema, t, p, n in await cur.fetchall() if (t, p) in lost and n > archived.get((t, p), 0)}
    cur = await conn.execute("SELECT projection, generation, version, state FROM projection_generations")
    dropped = [Generation(*row) for row in await cur.fetchall() if Generation(*row).schema in beyond]
    for gen in dropped:
        if gen.projection != ARCHIVE:  # its positions are its rows: never beyond them
            await drop_generation(conn, gen)
    await conn.execute(
        "INSERT INTO stack_state (key, value) VALUES (%s, to_jsonb(now())) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        (_ACCEPTED_KEY,),
    )
    await conn.execute("DELETE FROM stack_state WHERE key = %s", (MARKS_KEY,))
    return sorted(g.schema for g in dropped if g.projection != ARCHIVE)


async def start_over(conn: AsyncConnection[Any]) -> list[str]:
    """Drop every read model with its positions and dead letters, to follow a new log; return what was dropped.

    The archive is the exception: its active generation is retired with its tables (the history of the old log,
    which on Tansu exists nowhere else), and a new generation archives the new log.
    """
    cur = await conn.execute("SELECT projection, generation, version, state FROM projection_generations")
    generations = [Generation(p, g, v, s) for p, g, v, s in await cur.fetchall()]
    dropped: list[str] = []
    for gen in generations:
        if gen.projection == ARCHIVE:
            await conn.execute(
                "UPDATE projection_generations SET state = 'retired' WHERE projection = %s AND generation = %s",
                (gen.projection, gen.generation),
            )
            await conn.execute("DELETE FROM projection_offsets WHERE projection = %s", (gen.schema,))
        else:
            await drop_generation(conn, gen)
            dropped.append(gen.schema)
    await conn.execute("DELETE FROM projection_offsets")
    await conn.execute("DELETE FROM stack_state WHERE key = %s", (MARKS_KEY,))
    await conn.execute(
        "INSERT INTO stack_state (key, value) VALUES (%s, to_jsonb(now())) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        (_ACCEPTED_KEY,),
    )
    return dropped
