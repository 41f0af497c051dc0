"""The consumer loop every projection runs on: Kafka in, one PostgreSQL transaction per batch.

Ordering guarantee per batch (see ``consumers.batch``): *write read-model rows + positions -> commit the
PostgreSQL transaction*. Kafka offsets are never committed: on assignment the worker seeks to the positions
stored in PostgreSQL, so a crash at any moment re-delivers only records whose transaction did not commit.

Throughput on a small machine comes from keeping Python busy while PostgreSQL works: the next batch is fetched
and decoded, and the previous one freed, during the current batch's waits (``pump``); while catching up, batches
are cut in time order across partitions (``consumers.alignment``), so a fold that joins topics writes each row
once instead of once per topic.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
import warnings
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from consumers._gc import Collections, gc_paused
from consumers.alignment import TimeAligned
from consumers.batch import BatchOutcome, BatchProcessor, Decoded, Record
from consumers.errors import ConsumerError, GenerationChanged, is_retriable
from consumers.prefetch import Fetched, Prefetch, Taken, decode_sliced, partitions_behind, ready, release
from projections.tracking import Generation, ensure_active_generation, ensure_position_rows, load_positions

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from projections.base import Projection

log = logging.getLogger(__name__)

#: Fetch sizes: large enough that the background fetcher keeps a few batches buffered while the loop is busy
#: in PostgreSQL (aiokafka fetches a partition again once its buffered records are handed out).
FETCH_SETTINGS: dict[str, Any] = {
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
}


def group_id(projection: str, prefix: str) -> str:
    """Consumer group of a projection: its name, under the deployment's topic prefix."""
    return f"{prefix}agl.projection.{projection}"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: ProjectionWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Nothing to flush: a batch in flight commits under its row locks, and the next owner waits for them.
        return

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.seek_to_stored(assigned)


class ProjectionWorker:
    """Keeps one projection up to date. ``__init__`` does no I/O; ``start()``, ``run()``, idempotent ``stop()``.

    Args:
        projection: what to apply.
        bootstrap: Kafka bootstrap servers.
        database_url: PostgreSQL URL.
        topic_prefix: the deployment's topic prefix.
        generation: write this generation (a rebuild); default: the active one, created if new.
        use_group: join the projection's consumer group (several instances share the partitions); without it
            every partition is assigned to this worker (a rebuild).
        batch_size: records per batch (one transaction each).
    """

    def __init__(
        self,
        projection: Projection,
        *,
        bootstrap: str,
        database_url: str,
        topic_prefix: str = "",
        generation: Generation | None = None,
        use_group: bool = True,
        batch_size: int = 2000,
        fetch_timeout_ms: int = 500,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.projection = projection
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.topic_prefix = topic_prefix
        self.use_group = use_group
        self.batch_size = batch_size
        self.fetch_timeout_ms = fetch_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_backoff_s = max_backoff_s
        self._fixed_generation = generation
        self.generation: Generation | None = generation
        self.processor: BatchProcessor | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._closed = False
        self._rates: dict[tuple[str, int], float] = {}
        #: the next offset each partition should deliver (the stored position, as far as this worker knows)
        self._expected: dict[TopicPartition, int] = {}
        #: seeks per partition: a prefetched batch whose partition was moved since is stale
        self._seeks: dict[TopicPartition, int] = {}
        #: the offset after the last record fetched per partition
        self._fetched_to: dict[TopicPartition, int] = {}
        #: partitions behind whose fetches brought nothing: batches do not wait for them until they deliver
        self._stalled: set[TopicPartition] = set()
        #: records fetched and not applied yet, while ``pump`` runs
        self._aligned: TimeAligned[TopicPartition, Record, Decoded] | None = None
        self._last_seen: dict[tuple[str, int], float] = {}
        self.applied_total = 0
        self.redelivered_total = 0
        self.duplicates_total = 0

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        assert self.consumer is None, "Did you call start twice?"
        conn = await self.connection()
        await self._load_generation(conn)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group_id(self.projection.name, self.topic_prefix) if self.use_group else None,
            enable_auto_commit=False,
            # Never "latest": Tansu's end offsets are wrong, and a reset racing our seek must land low, not high.
            auto_offset_reset="earliest",
            max_poll_records=self.batch_size,
            **FETCH_SETTINGS,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
        )
        await self.consumer.start()
        topics = self.projection.topic_names(self.topic_prefix)
        if self.use_group:
            self.consumer.subscribe(topics, listener=_Rebalance(self))
        else:
            # The consumer's own metadata holds only subscribed topics; ask the cluster for these.
            cluster = await self.consumer._client.fetch_all_metadata()
            tps = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
            if not tps:
                raise ConsumerError(f"none of {', '.join(topics)} exists; create the topics first (`agl up` does)")
            self.consumer.assign(tps)
            await self.seek_to_stored(tps)

    async def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.consumer is not None:
            await self.consumer.stop()
        if self._conn is not None:
            await self._conn.close()

    async def __aenter__(self) -> ProjectionWorker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __del__(self) -> None:
        if self.consumer is not None and not self._closed:
            warnings.warn(f"unclosed ProjectionWorker {self.projection.name}", ResourceWarning, stacklevel=1)

    # -- state ---------------------------------------------------------------------------------------------
    async def connection(self) -> psycopg.AsyncConnection[Any]:
        """The worker's PostgreSQL connection, reopened when the previous one broke."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                await self._conn.close()
            self._conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)
        return self._conn

    async def _load_generation(self, conn: psycopg.AsyncConnection[Any]) -> None:
        gen = self._fixed_generation or await ensure_active_generation(conn, self.projection)
        self.generation = gen
        self.processor = BatchProcessor(self.projection, gen, check_generation=self._fixed_generation is None)

    async def seek_to_stored(self, tps: Sequence[TopicPartition]) -> None:
        """Seek each partition to the position PostgreSQL stores for it (0 when none)."""
        assert self.consumer is not None and self.generation is not None
        # Its own connection: the rebalance listener runs beside the loop, whose connection may be mid-batch.
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            await ensure_position_rows(conn, self.generation.schema, [(tp.topic, tp.partition) for tp in tps])
            stored = await load_positions(conn, self.generation.schema)
        for tp in tps:
            # Let the assignment's own offset reset finish first, or it could land after our seek.
            await self.consumer.position(tp)
            self._expected[tp] = stored.get((tp.topic, tp.partition), 0)
            self.seek(tp, self._expected[tp])

    # -- the loop ------------------------------------------------------------------------------------------
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Move ``tp``'s fetch position; records of ``tp`` fetched before this call are then discarded."""
        assert self.consumer is not None
        self._seeks[tp] = self._seeks.get(tp, 0) + 1
        self._fetched_to[tp] = offset
        self._stalled.discard(tp)
        if self._aligned is not None:
            self._aligned.drop(tp)
        self.consumer.seek(tp, offset)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in flight is finished (or rolled back) before returning."""
        await self.pump(stop, self._unapplied, self._advance)

    def _unapplied(self, tp: TopicPartition, records: list[Record]) -> slice:
        """Records from the expected offset on: an offset reset racing our seek may re-deliver applied ones."""
        expected = self._expected.get(tp, 0)
        start = bisect.bisect_left(records, expected, key=attrgetter("offset"))
        if start == len(records) and records[0].offset < expected:
            self.seek(tp, expected)
        return slice(start, None)

    def _advance(self, outcome: BatchOutcome) -> None:
        self._expected.update({TopicPartition(t, p): o for (t, p), o in outcome.positions.items()})

    async def pump(
        self,
        stop: asyncio.Event,
        select: Callable[[TopicPartition, list[Record]], slice],
        on_batch: Callable[[BatchOutcome], None],
        until: Callable[[], bool] = lambda: False,
    ) -> None:
        """Apply batches until ``stop`` is set or ``until()`` holds; ``select`` picks each partition's records.

        The next batch is fetched and decoded while the current one is in PostgreSQL: the two cores a machine
        like ours has then work at once, decoding in Python and applying in PostgreSQL, instead of in turn.
        A prefetched batch is checked again when its turn comes: records of a partition moved by ``seek`` in
        the meantime are dropped (the consumer fetches them again from the new position).
        """
        assert self.consumer is not None, "call start() first"
        consumer = self.consumer
        aligned: TimeAligned[TopicPartition, Record, Decoded] = TimeAligned(attrgetter("timestamp"))
        self._aligned = aligned
        pending = Prefetch(self._fetch, list(consumer.assignment()))
        collections = Collections()
        waits = 0
        releasing: asyncio.Task[None] | None = None
        try:
            with gc_paused():
                while not stop.is_set() and not until():
                    behind = partitions_behind(consumer, self._fetched_to)
                    productive = True
                    if waits or pending.task.done() or not ready(aligned, behind, self.batch_size):
                        fetched = await pending.task
                        productive = bool(fetched)
                        self._absorb(aligned, fetched, select)  # the assignment may have changed meanwhile
                        behind = partitions_behind(consumer, self._fetched_to)
                        pending = Prefetch(self._fetch, self._wanted(aligned, behind))
                    assigned = consumer.assignment()
                    for tp in aligned.partitions():
                        if tp not in assigned:  # revoked by a rebalance: its new owner applies it
                            aligned.drop(tp)
                    # Waiting for a partition that is behind pays while fetches bring records; a fetch that
                    # brings none means it is slow or unreachable: go on without it until it delivers.
                    force = not productive or waits >= len(assigned)
                    if force:
                        self._stalled |= {tp for tp in behind if not aligned.size(tp)}
                    batch = aligned.take(self.batch_size, behind - self._stalled, force=force)
                    if batch is None:
                        waits = waits + 1 if aligned.partitions() else 0
                        continue
                    waits = 0
                    outcome = await self.process(batch[0], stop, decoded=batch[1])
                    # Freed during the next batch's waits for PostgreSQL, not here between the two.
                    if releasing is not None:
                        await releasing  # long done, as a rule: one release in flight at a time
                    releasing = asyncio.create_task(release(*batch))
                    del batch
                    if outcome is not None:
                        on_batch(outcome)
                    collections.between_batches()
        finally:
            if releasing is not None:
                await releasing
            self._aligned = None
            for tp in aligned.partitions():
                first = aligned.drop(tp)
                if first is not None and tp in consumer.assignment():
                    self.seek(tp, first.offset)
            await self._give_back(pending)

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
        assert self.consumer is not None
        return [tp for tp in self.consumer.assignment() if aligned.size(tp) < self.batch_size]

    def _absorb(
        self,
        aligned: TimeAligned[TopicPartition, Record, Decoded],
        fetched: Fetched,
        select: Callable[[TopicPartition, list[Record]], slice],
    ) -> None:
        """Buffer a prefetched batch's records, minus those of partitions moved or revoked since the fetch."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        for tp, (tp_records, tp_decoded, seeks) in fetched.items():
            if seeks != self._seeks.get(tp, 0) or tp not in assigned:
                continue
            chosen = select(tp, tp_records)
            aligned.add(tp, tp_records[chosen], tp_decoded[chosen])

    async def _fetch(self, taken: list[Taken], partitions: list[TopicPartition]) -> Fetched:
        """The next records of ``partitions``, decoded (yielding now and then, so the batch in flight proceeds).

        What the consumer handed out is put in ``taken`` first, so a cancelled prefetch can be given back.
        """
        assert self.consumer is not None
        if not partitions:
            if not self.consumer.assignment():  # no partition yet (a group member waiting for a rebalance)
                await asyncio.sleep(self.fetch_timeout_ms / 1000)
            return {}
        batch = await self.consumer.getmany(*partitions, timeout_ms=self.fetch_timeout_ms, max_records=self.batch_size)
        seeks = {tp: self._seeks.get(tp, 0) for tp in batch}
        taken.extend((tp, tp_records[0].offset, seeks[tp]) for tp, tp_records in batch.items() if tp_records)
        out: Fetched = {}
        for tp, tp_records in batch.items():
            if not tp_records:
                continue
            self._fetched_to[tp] = tp_records[-1].offset + 1
            self._stalled.discard(tp)
            out[tp] = (tp_records, await decode_sliced(self.projection, tp_records), seeks[tp])
        return out

    async def _give_back(self, pending: Prefetch) -> None:
        """Cancel a prefetch and rewind the partitions it took records of, so the consumer skips no record."""
        assert self.consumer is not None
        pending.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pending.task
        for tp, first_offset, seeks in pending.taken:
            if seeks == self._seeks.get(tp, 0) and tp in self.consumer.assignment():
                self.seek(tp, first_offset)

    async def process(
        self, records: Sequence[Record], stop: asyncio.Event | None = None, *, decoded: Sequence[Decoded] | None = None
    ) -> BatchOutcome | None:
        """Apply one batch, retrying retriable failures with backoff; ``None`` if stopped while retrying."""
        delay = 0.1
        while True:
            assert self.processor is not None
            try:
                with gc_paused():
                    conn = await self.connection()
                    outcome = await self.processor.process(conn, records, decoded=decoded, rates=self._rates)
            except GenerationChanged:
                await self._switch_generation()
                return None
            except Exception as e:
                if not is_retriable(e):
                    raise
                log.warning("%s: batch failed, retrying in %.1fs: %s", self.projection.name, delay, e)
                if stop is not None and stop.is_set():
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            self._account(outcome)
            return outcome

    def _account(self, outcome: BatchOutcome) -> None:
        """Totals, and a smoothed events/s per partition (stored with the next batch's positions)."""
        now = time.monotonic()
        self.applied_total += outcome.applied
        self.redelivered_total += outcome.redelivered
        self.duplicates_total += outcome.duplicates
        for tp, count in outcome.counts.items():
            last = self._last_seen.get(tp)
            if last is not None and now > last:
                self._rates[tp] = 0.7 * self._rates.get(tp, 0.0) + 0.3 * count / (now - last)
            self._last_seen[tp] = now

    async def _switch_generation(self) -> None:
        """A rebuild switched readers to a new generation: continue there, from its own positions."""
        assert self.consumer is not None
        log.info("%s: generation switched; following the new one", self.projection.name)
        await self._load_generation(await self.connection())
        await self.seek_to_stored(list(self.consumer.assignment()))


async def run_until_stopped(worker: ProjectionWorker, stop: asyncio.Event) -> None:
    """Run ``worker`` until ``stop`` is set (by a signal handler), then stop it cleanly."""
    async with worker:
        with contextlib.suppress(asyncio.CancelledError):
            await worker.run(stop)
