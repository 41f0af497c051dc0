"""High watermarks from fetch responses, never from ListOffsets: Tansu's end offsets are wrong (last batch's base
offset + 1), while the high watermark a fetch response carries is right.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.errors import ConsumerError

TopicPartitionKey = tuple[str, int]


class WatermarkTimeout(ConsumerError):
    """The broker did not answer a fetch for every partition in time."""

    retriable = True


@dataclass(frozen=True)
class Watermark:
    high_watermark: int
    #: Timestamp (ms) of the record at the asked position, when there is one: how old the oldest backlog is.
    next_record_ms: int | None


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
    return {(tp.topic, tp.partition): Watermark(consumer.highwater(tp) or 0, first_ts.get(tp)) for tp in tps}
