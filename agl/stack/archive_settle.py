"""At the stop of a broker that forgets its log (Tansu): let the archive catch up, and remember the broker's high
watermarks with the log epoch, so a restore at the next start (:mod:`agl.stack.restore`) can tell records that were
acknowledged but never archived from records that never existed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from psycopg.types.json import Jsonb

from agl.stack.restore import ARCHIVE, MARKS_KEY, TopicPartitionKey, log_ends, stored_log_epoch
from projections.tracking import active_generation

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from psycopg import AsyncConnection


@dataclass
class Settled:
    caught_up: bool
    #: partitions where the archive stayed behind the broker: (topic, partition) -> (archived, high watermark)
    behind: dict[TopicPartitionKey, tuple[int, int]] = field(default_factory=dict)


async def _partitions(bootstrap: str, topics: Sequence[str]) -> list[TopicPartitionKey]:
    # The producer's ``partitions_for`` waits for the topic's metadata (a consumer's answers from a cache).
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        return [(t, p) for t in topics for p in sorted(await producer.partitions_for(t))]
    finally:
        await producer.stop()


async def _archive_positions(conn: AsyncConnection[Any]) -> dict[TopicPartitionKey, int]:
    archive = await active_generation(conn, ARCHIVE)
    if archive is None:
        return {}
    cur = await conn.execute(
        "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = %s", (archive.schema,)
    )
    return {(t, p): n for t, p, n in await cur.fetchall()}


async def settle_archive(
    conn: AsyncConnection[Any],
    bootstrap: str,
    topics: Sequence[str],
    *,
    timeout_s: float = 30.0,
    archive_running: Callable[[], bool] = lambda: True,
) -> Settled:
    """Before a broker that forgets its log stops: wait until the archive holds every record, and remember the marks.

    Call it once nothing publishes any more (the API is stopped). The broker's high watermarks are stored with the
    log epoch, so a restore can tell records that were acknowledged but never archived (if the archive did not
    catch up in time, or is not running) from records that never existed.
    """
    marks = await log_ends(bootstrap, await _partitions(bootstrap, topics))
    epoch = await stored_log_epoch(conn)
    if epoch is not None:
        await conn.execute(
            "INSERT INTO stack_state (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            (MARKS_KEY, Jsonb({"epoch": epoch, "marks": [[t, p, n] for (t, p), n in sorted(marks.items()) if n]})),
        )
    deadline = time.monotonic() + timeout_s
    while True:
        positions = await _archive_positions(conn)
        behind = {tp: (positions.get(tp, 0), n) for tp, n in marks.items() if positions.get(tp, 0) < n}
        if not behind or time.monotonic() > deadline or not archive_running():
            return Settled(caught_up=not behind, behind=behind)
        await asyncio.sleep(0.1)
