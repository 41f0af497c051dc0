"""Restore a reset broker log from the event archive, so a restart of the memory-only Tansu broker loses nothing.

The archive projection keeps every record of every event topic, byte for byte, with its partition and offset.
When the broker comes back empty (its meta topic holds no epoch) while PostgreSQL remembers an epoch and the
archive holds records, the records are re-published to the same partitions in offset order. A fresh log starts
at offset 0 and Tansu writes no transaction markers, so every record lands at its old offset (checked record by
record), and the stored consumer positions are valid again. The caller then writes the old epoch marker back, so the
log is recognised as the one the positions belong to.

It refuses (and restores nothing) when that cannot be made exact: a partition's archived offsets have gaps, a
projection had already applied records the archive never received (they died with the broker), or the broker
already holds records.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from psycopg import sql

from agl.errors import LogResetError
from projections.tracking import Generation, active_generation, drop_generation

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection

ARCHIVE = "archive"
#: Rows read from PostgreSQL and sent to the broker per round; their deliveries are checked together.
_CHUNK = 5000


@dataclass
class RestoreReport:
    epoch: str
    partitions: int = 0
    records: int = 0
    seconds: float = 0.0
    per_topic: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"restored {self.records} records into {self.partitions} partitions from the archive "
            f"(log epoch {self.epoch}) in {self.seconds:.1f}s"
        )


async def stored_log_epoch(conn: AsyncConnection[Any]) -> str | None:
    cur = await conn.execute("SELECT value FROM stack_state WHERE key = 'log_epoch'")
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def _archived_partitions(conn: AsyncConnection[Any], schema: str) -> dict[tuple[str, int], int]:
    """Records archived per (topic, partition); raises if a partition's offsets are not 0..n-1."""
    query = sql.SQL(
        'SELECT topic, partition, count(*), min("offset"), max("offset") FROM {}.events GROUP BY 1, 2'
    ).format(sql.Identifier(schema))
    counts: dict[tuple[str, int], int] = {}
    for topic, partition, count, first, last in await (await conn.execute(query)).fetchall():
        if first != 0 or last != count - 1:
            raise LogResetError(
                f"the broker's log was reset and the archive cannot restore {topic}[{partition}] exactly "
                f"(offsets {first}..{last} hold {count} records); start the read models over with "
                "`agl up --accept-log-reset`"
            )
        counts[(topic, partition)] = count
    return counts


async def _check_positions(conn: AsyncConnection[Any], archived: dict[tuple[str, int], int]) -> None:
    """Every stored position must lie within what the archive can restore."""
    cur = await conn.execute("SELECT projection, topic, partition, next_offset FROM projection_offsets")
    for consumer, topic, partition, next_offset in await cur.fetchall():
        have = archived.get((topic, partition), 0)
        if next_offset > have:
            raise LogResetError(
                f"the broker's log was reset and the archive holds {have} records of {topic}[{partition}], but "
                f"{consumer} had applied {next_offset}: records {have}..{next_offset - 1} were lost with the "
                "broker. Start the read models over with `agl up --accept-log-reset`"
            )


async def _broker_is_empty(bootstrap: str, tps: Sequence[TopicPartition]) -> bool:
    if not tps:
        return True
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        # Tansu's end offsets are off by a batch, but an empty partition still reports 0.
        ends = await consumer.end_offsets(list(tps))
    finally:
        await consumer.stop()
    return all(offset == 0 for offset in ends.values())


def _headers(encoded: Any) -> list[tuple[str, bytes]]:
    pairs = orjson.loads(encoded) if isinstance(encoded, str | bytes) else encoded
    return [(str(name), base64.b64decode(value)) for name, value in pairs]


async def _republish(conn: AsyncConnection[Any], producer: AIOKafkaProducer, schema: str, topic: str, part: int) -> int:
    query = sql.SQL(
        'SELECT "offset", key, value, headers, (extract(epoch FROM timestamp) * 1000)::bigint '
        'FROM {}.events WHERE topic = %s AND partition = %s ORDER BY "offset"'
    ).format(sql.Identifier(schema))
    sent = 0
    async with conn.cursor(name=f"restore_{topic}_{part}".replace(".", "_")) as cur:
        await cur.execute(query, (topic, part))
        while rows := await cur.fetchmany(_CHUNK):
            futures = [
                (
                    offset,
                    await producer.send(topic, value, key=key, partition=part, headers=_headers(h), timestamp_ms=ts),
                )
                for offset, key, value, h, ts in rows
            ]
            for offset, future in futures:
                landed = (await future).offset
                if landed != offset:
                    raise LogResetError(
                        f"restoring {topic}[{part}]: archived offset {offset} landed at {landed}; the restored "
                        "log does not match the archive. Start over with `agl up --accept-log-reset`"
                    )
            sent += len(rows)
    return sent


async def restore_from_archive(
    conn: AsyncConnection[Any], bootstrap: str, topics: Sequence[str]
) -> RestoreReport | None:
    """Re-publish the archive into an empty log; ``None`` when there is nothing to restore.

    Call it only when the broker's meta topic holds no epoch, and write ``report.epoch`` back as the log's epoch
    marker afterwards. ``topics`` are the full names of the event topics.

    Raises:
        LogResetError: the archive cannot restore the log exactly; nothing was restored.
    """
    epoch = await stored_log_epoch(conn)
    archive = await active_generation(conn, ARCHIVE)
    if epoch is None or archive is None:
        return None
    archived = {tp: n for tp, n in (await _archived_partitions(conn, archive.schema)).items() if tp[0] in topics}
    if not archived:
        return None
    await _check_positions(conn, archived)
    tps = [TopicPartition(t, p) for t, p in archived]
    if not await _broker_is_empty(bootstrap, tps):
        return None  # not a reset log: the epoch check decides what happens next
    t0 = time.monotonic()
    report = RestoreReport(epoch=epoch, partitions=len(archived))
    # No idempotence (Tansu refuses it); order per partition holds because aiokafka keeps one batch in flight
    # per partition, and every landed offset is checked anyway.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    try:
        async with conn.transaction():  # the named cursors need one
            for topic, partition in sorted(archived):
                sent = await _republish(conn, producer, archive.schema, topic, partition)
                report.per_topic[topic] = report.per_topic.get(topic, 0) + sent
                report.records += sent
    finally:
        await producer.stop()
    report.seconds = time.monotonic() - t0
    return report


async def start_over(conn: AsyncConnection[Any]) -> int:
    """Drop every generation of every read model with its positions and dead letters; return how many."""
    cur = await conn.execute("SELECT projection, generation, version, state FROM projection_generations")
    generations = [Generation(p, g, v, s) for p, g, v, s in await cur.fetchall()]
    for gen in generations:
        await drop_generation(conn, gen)
    await conn.execute("DELETE FROM projection_offsets")
    return len(generations)
