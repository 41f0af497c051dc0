"""The worker's plain loop, the whole of it: fetch, pick the records not applied yet, apply them in one
transaction, repeat.

Exactly-once needs nothing else: ``ProjectionWorker.process`` stores the positions with the rows and drops records
below them, and the rebalance listener seeks newly assigned partitions to their stored positions. The pipelined
pump (``consumers.pipelined_pump``), which workers run by default, is this loop with work done ahead of
PostgreSQL, and must agree with it (tests/consumers/test_plain_pump.py holds this one to the same contract).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from consumers.prefetch import consumed_positions

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiokafka import TopicPartition

    from consumers.batch import BatchOutcome, Record
    from consumers.worker import ProjectionWorker


async def pump_plain(
    worker: ProjectionWorker,
    stop: asyncio.Event,
    select: Callable[[TopicPartition, list[Record]], slice],
    on_batch: Callable[[BatchOutcome], None],
    until: Callable[[], bool],
) -> None:
    """Apply ``worker``'s batches until ``stop`` is set or ``until()`` holds; ``select`` picks each partition's
    records."""
    assert worker.consumer is not None, "call start() first"
    consumer = worker.consumer
    while not stop.is_set() and not until():
        if not consumer.assignment():  # a group member waiting for a rebalance
            await asyncio.sleep(worker.fetch_timeout_ms / 1000)
            continue
        fetched = await consumer.getmany(timeout_ms=worker.fetch_timeout_ms, max_records=worker.batch_size)
        assigned = consumer.assignment()
        # Past control records (transaction markers) and aborted records too, which are never handed out.
        worker.consumed_to.update(consumed_positions(consumer, list(assigned)))
        records: list[Record] = []
        for tp, tp_records in fetched.items():
            if tp_records and tp in assigned:  # not revoked by a rebalance meanwhile
                records += tp_records[select(tp, tp_records)]
        if not records:
            continue
        outcome = await worker.process(records, stop)
        if outcome is not None:
            on_batch(outcome)
