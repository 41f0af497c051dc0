"""High watermarks from fetch responses, never from ListOffsets: Tansu's end offsets are wrong (last batch's base
offset + 1), while the high watermark a fetch response carries is right.

Read committed, like the workers: the end that counts is the last stable offset (records beyond it belong to a
transaction still open), and a position followed only by transaction markers or aborted records has nothing
left to apply, although the high watermark lies beyond it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.errors import ConsumerError
from consumers.prefetch import consumed_positions, stable_end

TopicPartitionKey = tuple[str, int]


class WatermarkTimeout(ConsumerError):
    """The broker did not answer a fetch for every partition in time."""

    retriable = True


@dataclass(frozen=True)
class Watermark:
    #: the last stable offset (the high watermark when the broker reports none)
    high_watermark: int
    #: Timestamp (ms) of the record at the asked position, when there is one: how old the oldest backlog is.
    next_record_ms: int | None
    #: the consumer's position after one fetch from the asked one: past markers and aborted records
    consumed_to: int | None = None

    def lag(self, position: int) -> int:
        """Records left to apply after ``position``: none when only markers or aborted records follow it."""
        if self.next_record_ms is None and self.consumed_to is not None and self.consumed_to >= self.high_watermark:
            return 0
        return max(0, self.high_watermark - position)


async def fetch_watermarks(
    bootstrap: str, positions: dict[TopicPartitionKey, int], *, timeout_s: float = 10.0
) -> dict[TopicPartitionKey, Watermark]:
    """Fetch once from each partition at ``positions`` and report its high watermark and next record's time."""
    if not positions:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=64 * 1024,
    )
    await consumer.start()
    try:
        tps = {TopicPartition(t, p): o for (t, p), o in positions.items()}
        consumer.assign(list(tps))
        for tp, offset in tps.items():
            await consumer.position(tp)
            consumer.seek(tp, offset)
        return await _poll(consumer, tps, timeout_s)
    finally:
        await consumer.stop()


async def _poll(
    consumer: AIOKafkaConsumer, tps: dict[TopicPartition, int], timeout_s: float
) -> dict[TopicPartitionKey, Watermark]:
    first_ts: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        batch = await consumer.getmany(timeout_ms=200, max_records=len(tps) * 4)
        for tp, records in batch.items():
            for record in records:
                if record.offset >= tps[tp]:
                    first_ts.setdefault(tp, record.timestamp)
                    break
            consumer.pause(tp)  # one fetch per partition is enough
        answered = [tp for tp in tps if consumer.last_poll_timestamp(tp) is not None]
        if len(answered) == len(tps):
            break
        if time.monotonic() > deadline:
            missing = sorted(f"{tp.topic}:{tp.partition}" for tp in tps if tp not in answered)
            raise WatermarkTimeout(f"no fetch response within {timeout_s:.0f}s for {', '.join(missing)}")
        await asyncio.sleep(0)
    consumed = consumed_positions(consumer, list(tps))
    return {
        (tp.topic, tp.partition): Watermark(stable_end(consumer, tp) or 0, first_ts.get(tp), consumed.get(tp))
        for tp in tps
    }
