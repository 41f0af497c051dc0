"""Recognise a broker whose log was reset, before anyone trusts the positions stored in PostgreSQL.

The first record of the meta topic names the log's epoch (a UUID written when the log began). PostgreSQL
remembers the epoch its positions belong to. When they differ while positions exist, resuming would seek
beyond the end of a shorter log: Tansu then stalls without an error and later skips events. So the stack
refuses, unless told to start the read models over; even then the event archive is kept (``start_over``).

Tansu forgets its log when it stops, so before it stops the archive is given the time to store every record
(``settle_archive_at_stop``): what it still lacks then is known, and reported by the restore at the next start.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from psycopg.types.json import Jsonb

from agl.errors import LogResetError
from agl.stack.archive_settle import settle_archive
from agl.stack.restore import start_over

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger(__name__)

_EPOCH_KEY = b"log_epoch"
_READ_TIMEOUT_MS = 10_000


class EpochOutcome(enum.Enum):
    ADOPTED = "adopted"  # PostgreSQL had no positions: it now follows this log
    SAME = "same"  # the log PostgreSQL has consumed is still there
    RESET_ACCEPTED = "reset-accepted"  # the log was reset and the caller chose to start over


async def read_log_epoch(bootstrap: str, topic: str) -> str | None:
    """The epoch in the first record of ``topic``, or ``None`` if the topic is empty."""
    tp = TopicPartition(topic, 0)
    # "earliest": an assignment starts an offset reset of its own, which must not race us to the log's end.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        # Tansu's end offsets are off by a batch, but an empty log still reports 0.
        if (await consumer.end_offsets([tp]))[tp] == 0:
            return None
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=_READ_TIMEOUT_MS, max_records=1)
        for record in batch.get(tp, []):
            value: dict[str, Any] = orjson.loads(record.value)
            return str(value["log_epoch"])
        return None
    finally:
        await consumer.stop()


async def write_log_epoch(bootstrap: str, topic: str, epoch: str) -> None:
    """Append an epoch marker (only the first one in the topic counts)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        body = {"log_epoch": epoch, "created_at": datetime.now(UTC).isoformat()}
        await producer.send_and_wait(topic, orjson.dumps(body), key=_EPOCH_KEY, partition=0)
    finally:
        await producer.stop()


async def ensure_log_epoch(bootstrap: str, topic: str) -> str:
    """Return the log's epoch, writing a new one first if the log has none."""
    epoch = await read_log_epoch(bootstrap, topic)
    if epoch is not None:
        return epoch
    await write_log_epoch(bootstrap, topic, str(uuid.uuid4()))
    # Read back rather than trust our own write: a concurrent starter may have written first.
    epoch = await read_log_epoch(bootstrap, topic)
    assert epoch is not None, f"{topic} is empty right after a write"
    return epoch


async def reconcile_log_epoch(
    conn: AsyncConnection[Any], broker_epoch: str, *, accept_reset: bool = False
) -> EpochOutcome:
    """Compare the broker's epoch with the one PostgreSQL's positions belong to.

    Raises:
        LogResetError: positions exist for another epoch and ``accept_reset`` is false.
    """
    async with conn.transaction():
        cur = await conn.execute("SELECT value FROM stack_state WHERE key = 'log_epoch' FOR UPDATE")
        row = await cur.fetchone()
        stored = None if row is None else str(row[0])
        if stored == broker_epoch:
            return EpochOutcome.SAME
        cur = await conn.execute("SELECT count(*) FROM projection_offsets")
        count_row = await cur.fetchone()
        positions = 0 if count_row is None else int(count_row[0])
        if stored is not None and positions > 0:
            if not accept_reset:
                raise LogResetError(
                    f"the broker's log was reset (epoch {stored} is gone, the broker now holds {broker_epoch}) "
                    f"but PostgreSQL holds {positions} consumer positions in the old log; resuming would skip "
                    "or stall. `agl up --accept-log-reset` starts the read models over on the new log and keeps the "
                    "event archive (retired, as read-only history: it is never deleted), or use the durable Apache "
                    "Kafka broker (`agl up --broker kafka`)"
                )
            # Positions without their rows would be as wrong as rows without positions: drop both (the archive's
            # rows are kept, retired, since they are the old log's only copy).
            await start_over(conn)
        await conn.execute(
            "INSERT INTO stack_state (key, value) VALUES ('log_epoch', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            (Jsonb(broker_epoch),),
        )
        return EpochOutcome.ADOPTED if stored is None or positions == 0 else EpochOutcome.RESET_ACCEPTED


async def settle_archive_at_stop(
    database_url: str,
    bootstrap: str,
    topics: list[str],
    *,
    archive_running: Callable[[], bool],
    timeout_s: float = 30.0,
) -> str | None:
    """Before a broker that forgets its log stops (the writers stopped already): let the archive catch up.

    Returns a warning to print when the archive could not catch up. Never raises: the stack is stopping either
    way, and the restore at the next start reports what is missing again (from the high watermarks stored here).
    """
    import psycopg

    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            settled = await settle_archive(
                conn, bootstrap, topics, timeout_s=timeout_s, archive_running=archive_running
            )
    except Exception as e:  # a stop must go on; the restore at the next start still finds the loss
        log.warning("could not wait for the archive before stopping the broker", exc_info=True)
        return f"warning: could not check that the archive holds every record before stopping: {e}"
    if settled.caught_up:
        return None
    behind = "; ".join(f"{t}[{p}] {have} of {mark}" for (t, p), (have, mark) in sorted(settled.behind.items()))
    return (
        f"warning: the archive did not catch up before the broker stopped ({behind}); those records are lost "
        "with the broker, and the next `agl up` reports them"
    )
