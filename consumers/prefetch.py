"""Working ahead of the batch in flight: the background fetch, decoding and freeing in slices, partitions behind.

All of it runs while the current batch waits for PostgreSQL (see ``consumers.pipelined_pump``). Work is cut in
slices of about a millisecond with a yield in between, so the batch in flight goes on soon after PostgreSQL
answers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.batch import Decoded, Record, decode_records

if TYPE_CHECKING:
    from consumers.alignment import TimeAligned
    from projections.base import Projection

#: Records decoded (or freed) between two yields to the event loop.
SLICE = 100
#: A prefetched batch: per partition its records, their decoding, the partition's seek count at fetch time, and the
#: consumer's position after the fetch (past trailing transaction markers and aborted records).
Fetched = dict[TopicPartition, tuple[list[Record], list[Decoded], int, int]]
#: What a prefetch took from the consumer: partition, first offset, the partition's seek count at fetch time.
Taken = tuple[TopicPartition, int, int]


class Prefetch:
    """A fetch running in the background, and what it has taken from the consumer so far."""

    def __init__(
        self,
        fetch: Callable[[list[Taken], list[TopicPartition]], Coroutine[Any, Any, Fetched]],
        partitions: list[TopicPartition],
    ) -> None:
        self.taken: list[Taken] = []
        self.task = asyncio.create_task(fetch(self.taken, partitions))


async def decode_sliced(projection: Projection, records: Sequence[Record]) -> list[Decoded]:
    decoded: list[Decoded] = []
    for i in range(0, len(records), SLICE):
        decoded += decode_records(projection, records[i : i + SLICE])
        await asyncio.sleep(0)
    return decoded


async def release(*lists: list[Any]) -> None:
    """Empty ``lists`` from the end, a slice at a time: freeing a batch takes as long as decoding half of one."""
    for items in lists:
        while items:
            del items[-SLICE:]
            await asyncio.sleep(0)


def ready(aligned: TimeAligned[TopicPartition, Record, Decoded], behind: set[TopicPartition], size: int) -> bool:
    """Whether a batch can be handed out without fetching first: a full one, or all there is to fetch."""
    buffered = sum(aligned.size(tp) for tp in aligned.partitions())
    return buffered >= size or (buffered > 0 and not behind)


def partitions_behind(consumer: AIOKafkaConsumer, fetched_to: dict[TopicPartition, int]) -> set[TopicPartition]:
    """Assigned, unpaused partitions with records on the broker not fetched yet (or not known to have none).

    High watermarks come from fetch responses, which are right on Tansu too (unlike its end offsets).
    """
    paused = consumer.paused()
    out = set()
    for tp in consumer.assignment():
        if tp in paused:
            continue
        high = stable_end(consumer, tp)
        if high is None or fetched_to.get(tp, 0) < high:
            out.add(tp)
    return out


def stable_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """Where a read-committed consumer's records end: the last stable offset (beyond it a transaction is open),
    else the high watermark (a broker that reports no LSO); ``None`` before the first fetch."""
    lso = consumer.last_stable_offset(tp)
    high = consumer.highwater(tp)
    if lso is not None and lso >= 0 and (high is None or lso <= high):
        return int(lso)
    return None if high is None else int(high)


def consumed_positions(consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """The consumer's fetch position of each assigned partition of ``partitions`` that has a valid one.

    Read from the subscription state (aiokafka's ``position()`` is a coroutine that may wait for a reset): it
    moves past control records and aborted records, which the consumer never hands out.
    """
    out: dict[TopicPartition, int] = {}
    subscription = consumer._subscription.subscription
    if subscription is None or subscription.assignment is None:
        return out
    assignment = subscription.assignment
    for tp in partitions:
        state = assignment.state_value(tp)
        if state is not None and state.has_valid_position:
            out[tp] = int(state.position)
    return out
