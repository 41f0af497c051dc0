"""The worker's fast pump: the plain loop of ``consumers.plain_pump``, with work done ahead of PostgreSQL.

It hands ``ProjectionWorker.process`` the same kind of batches as the plain loop, and every correctness rule
(one transaction per batch, positions stored with rows, nothing applied twice after a seek or a rebalance) stays
in the worker and in ``consumers.batch``. What it adds, each to keep a small machine's two cores busy at once:

- **prefetch** (``consumers.prefetch``): the next batch is fetched and decoded while the current one is in
  PostgreSQL. A prefetched batch is checked again when its turn comes: records of a partition moved by a seek or
  revoked since the fetch are dropped (the consumer fetches them again), and on exit a prefetch in hand is
  given back (its partitions are moved back to its first record), so no record is skipped;
- **time alignment** (``consumers.alignment``): while catching up, batches are cut oldest first across
  partitions, so a fold that joins topics meets an entity's events in one batch;
- **freeing in slices** (``consumers.prefetch.release``): the last batch is freed during the next one's waits;
- **GC pauses** (``consumers._gc``): no cyclic collection while batches flow, a collection now and then between.
"""

from __future__ import annotations

import asyncio
import contextlib
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition

from consumers._gc import Collections, gc_paused
from consumers.alignment import TimeAligned
from consumers.batch import BatchOutcome, Decoded, Record
from consumers.prefetch import (
    Fetched,
    Prefetch,
    Taken,
    consumed_positions,
    decode_sliced,
    partitions_behind,
    ready,
    release,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from consumers.worker import ProjectionWorker


class PipelinedPump:
    """The state of the work done ahead for one worker; it lives as long as the worker, across ``run`` calls."""

    def __init__(self, worker: ProjectionWorker) -> None:
        self.worker = worker
        #: seeks per partition: a prefetched batch whose partition was moved since is stale
        self._seeks: dict[TopicPartition, int] = {}
        #: the consumer's position per partition after the last fetch: past the last record fetched, and past
        #: any control records (transaction markers) and aborted records after it
        self._fetched_to: dict[TopicPartition, int] = {}
        #: partitions behind whose fetches brought nothing: batches do not wait for them until they deliver
        self._stalled: set[TopicPartition] = set()
        #: records fetched and not applied yet, while ``run`` runs
        self._aligned: TimeAligned[TopicPartition, Record, Decoded] | None = None

    def moved(self, tp: TopicPartition, offset: int) -> None:
        """The worker moved ``tp`` to ``offset``: what was fetched of it before is stale."""
        self._seeks[tp] = self._seeks.get(tp, 0) + 1
        self._fetched_to[tp] = offset
        self._stalled.discard(tp)
        if self._aligned is not None:
            self._aligned.drop(tp)

    async def run(
        self,
        stop: asyncio.Event,
        select: Callable[[TopicPartition, list[Record]], slice],
        on_batch: Callable[[BatchOutcome], None],
        until: Callable[[], bool],
    ) -> None:
        """Apply batches until ``stop`` is set or ``until()`` holds (the contract of ``ProjectionWorker.pump``)."""
        worker = self.worker
        assert worker.consumer is not None, "call start() first"
        consumer = worker.consumer
        aligned: TimeAligned[TopicPartition, Record, Decoded] = TimeAligned(attrgetter("timestamp"))
        self._aligned = aligned
        pending = Prefetch(self._fetch, list(consumer.assignment()))
        collections = Collections()
        waits = 0
        releasing: asyncio.Task[None] | None = None
        stopping = asyncio.create_task(stop.wait())
        try:
            with gc_paused():
                while not stop.is_set() and not until():
                    behind = partitions_behind(consumer, self._fetched_to)
                    productive = True
                    if waits or pending.task.done() or not ready(aligned, behind, worker.batch_size):
                        fetched = await _unless_stopped(pending, stopping)
                        if fetched is None:
                            break  # stopped: the prefetch is given back below
                        productive = bool(fetched)
                        self._absorb(aligned, fetched, select)  # the assignment may have changed meanwhile
                        behind = partitions_behind(consumer, self._fetched_to)
                        pending = Prefetch(self._fetch, self._wanted(aligned, behind))
                    assigned = consumer.assignment()
                    _drop_revoked(aligned, assigned)
                    # Waiting for a partition that is behind pays while fetches bring records; a fetch that
                    # brings none means it is slow or unreachable: go on without it until it delivers.
                    force = not productive or waits >= len(assigned)
                    if force:
                        self._stalled |= {tp for tp in behind if not aligned.size(tp)}
                    batch = aligned.take(worker.batch_size, behind - self._stalled, force=force)
                    if batch is None:
                        waits = waits + 1 if aligned.partitions() else 0
                        continue
                    waits = 0
                    outcome = await worker.process(batch[0], stop, decoded=batch[1])
                    # Freed during the next batch's waits for PostgreSQL, not here between the two.
                    if releasing is not None:
                        await releasing  # long done, as a rule: one release in flight at a time
                    releasing = asyncio.create_task(release(*batch))
                    del batch
                    if outcome is not None:
                        on_batch(outcome)
                    collections.between_batches()
        finally:
            stopping.cancel()
            if releasing is not None:
                await releasing
            self._aligned = None
            self._rewind(aligned)
            await self._give_back(pending)

    def _rewind(self, aligned: TimeAligned[TopicPartition, Record, Decoded]) -> None:
        """Move each partition back to its first record fetched and not applied, so the next run fetches it."""
        assert self.worker.consumer is not None
        for tp in aligned.partitions():
            first = aligned.drop(tp)
            if first is not None and tp in self.worker.consumer.assignment():
                self.worker.seek(tp, first.offset)

    def _wanted(
        self,
        aligned: TimeAligned[TopicPartition, Record, Decoded],
        behind: set[TopicPartition],
    ) -> list[TopicPartition]:
        """What to fetch next: the partitions that hold the horizon back, else any short of a batch.

        Fetched while the current batch is applied, the partition that will limit the next batch is decoded by
        the time it is needed.
        """
        waiting = behind - self._stalled
        if waiting:
            return aligned.earliest(waiting)
        assert self.worker.consumer is not None
        return [tp for tp in self.worker.consumer.assignment() if aligned.size(tp) < self.worker.batch_size]

    def _absorb(
        self,
        aligned: TimeAligned[TopicPartition, Record, Decoded],
        fetched: Fetched,
        select: Callable[[TopicPartition, list[Record]], slice],
    ) -> None:
        """Buffer a prefetched batch's records, minus those of partitions moved or revoked since the fetch."""
        assert self.worker.consumer is not None
        assigned = self.worker.consumer.assignment()
        for tp, (tp_records, tp_decoded, seeks, consumed) in fetched.items():
            if seeks != self._seeks.get(tp, 0) or tp not in assigned:
                continue
            self.worker.consumed_to[tp] = consumed
            if not tp_records:
                continue  # only control records (transaction markers) or aborted ones: nothing to apply
            chosen = select(tp, tp_records)
            aligned.add(tp, tp_records[chosen], tp_decoded[chosen])

    async def _fetch(self, taken: list[Taken], partitions: list[TopicPartition]) -> Fetched:
        """The next records of ``partitions``, decoded (yielding now and then, so the batch in flight proceeds).

        What the consumer handed out is put in ``taken`` first, so a cancelled prefetch can be given back.
        """
        worker = self.worker
        assert worker.consumer is not None
        if not partitions:
            if not worker.consumer.assignment():  # no partition yet (a group member waiting for a rebalance)
                await asyncio.sleep(worker.fetch_timeout_ms / 1000)
            return {}
        batch = await worker.consumer.getmany(
            *partitions, timeout_ms=worker.fetch_timeout_ms, max_records=worker.batch_size
        )
        # Read before the first await, so they match what getmany handed out: a fetch of control records only
        # (a transaction's commit marker) returns no record but moves the position past them.
        consumed = consumed_positions(worker.consumer, partitions)
        seeks = {tp: self._seeks.get(tp, 0) for tp in consumed}
        taken.extend((tp, tp_records[0].offset, seeks[tp]) for tp, tp_records in batch.items() if tp_records)
        out: Fetched = {}
        for tp, position in consumed.items():
            if position > self._fetched_to.get(tp, 0):
                self._fetched_to[tp] = position
                out[tp] = ([], [], seeks[tp], position)
        for tp, tp_records in batch.items():
            if not tp_records or tp not in consumed:
                continue
            self._stalled.discard(tp)
            out[tp] = (tp_records, await decode_sliced(worker.projection, tp_records), seeks[tp], consumed[tp])
        return out

    async def _give_back(self, pending: Prefetch) -> None:
        """Cancel a prefetch and rewind the partitions it took records of, so the consumer skips no record."""
        assert self.worker.consumer is not None
        pending.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pending.task
        for tp, first_offset, seeks in pending.taken:
            if seeks == self._seeks.get(tp, 0) and tp in self.worker.consumer.assignment():
                self.worker.seek(tp, first_offset)


async def _unless_stopped(pending: Prefetch, stopping: asyncio.Task[Any]) -> Fetched | None:
    """What ``pending`` fetched; ``None`` if ``stopping`` ends first.

    A fetch waits without limit while the group rebalances (aiokafka's getmany waits for the next assignment),
    and a rebalance lasts until every member has rejoined: a stop must not wait for that.
    """
    if not pending.task.done():
        await asyncio.wait((pending.task, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not pending.task.done():
            return None
    return pending.task.result()


def _drop_revoked(aligned: TimeAligned[TopicPartition, Record, Decoded], assigned: set[TopicPartition]) -> None:
    for tp in aligned.partitions():
        if tp not in assigned:  # revoked by a rebalance: its new owner applies it
            aligned.drop(tp)
