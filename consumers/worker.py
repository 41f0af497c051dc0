"""The consumer loop every projection runs on: Kafka in, one PostgreSQL transaction per batch.

Ordering guarantee per batch (see ``consumers.batch``): *write read-model rows + positions -> commit the
PostgreSQL transaction*. Kafka offsets are never committed: on assignment the worker seeks to the positions
stored in PostgreSQL, so a crash at any moment re-delivers only records whose transaction did not commit.

The loop itself is ``consumers.plain_pump``: fetch, pick, apply in one transaction, repeat. By default it
runs pipelined (``consumers.pipelined_pump``), which adds only speed: the next batch is fetched and decoded, and
the previous one freed, during the current batch's waits for PostgreSQL; while catching up, batches are cut in
time order across partitions (``consumers.alignment``), so a fold that joins topics writes each row once instead
of once per topic; cyclic GC pauses while batches flow (``consumers._gc``).

Several instances share a projection's partitions through its consumer group. The group assigns partition p of
every topic the projection reads to one member (``consumers.copartition``), and a batch locks its keys before
``apply`` (``consumers.batch``), so one entity is never folded by two instances at once, rebalances included.
Records are read committed: those of aborted transactions never reach ``apply``, and lag is measured against
the last stable offset.

A worker writes only a generation built by its own ``version``: when the active one is newer (a rebuild
switched readers) it stops with :class:`ProjectionVersionMismatch`; when it is older (new code deployed before
the rebuild) it waits, writing nothing, until a generation of its version is active (``consumers.version_gate``).
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
from psycopg.conninfo import conninfo_to_dict

from consumers.batch import BatchOutcome, BatchProcessor, Decoded, Record
from consumers.errors import GenerationChanged, is_retriable
from consumers.pipelined_pump import PipelinedPump
from consumers.plain_pump import pump_plain
from consumers.projection_consumer import new_consumer, take_partitions
from consumers.version_gate import VERSION_POLL_S, await_own_version, refuse_newer
from core.pg_session import configure_session
from projections.tracking import (
    Generation,
    ensure_active_generation,
    ensure_position_rows,
    load_positions,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from projections.base import Projection

log = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: ProjectionWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Nothing to flush: a batch in flight commits under its position-row and per-key locks, and the next
        # owner of those partitions (and of those entities) waits for them.
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
        pipelined: run the pipelined pump (the default); ``False`` runs the plain loop it must agree with.
        application_name: what its PostgreSQL connections show in ``pg_stat_activity`` (several workers share a
            process: ``consumers.runner.run_projections``); default: libpq's (``PGAPPNAME``). An
            ``application_name`` in ``database_url`` wins.
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
        version_poll_s: float = VERSION_POLL_S,
        pipelined: bool = True,
        application_name: str | None = None,
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
        self.version_poll_s = version_poll_s
        self._fixed_generation = generation
        self.generation: Generation | None = generation
        self.processor: BatchProcessor | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._closed = False
        self._started = False
        #: the (older) active generation this worker waits to see replaced by one of its version
        self._waiting_for: Generation | None = None
        self._rates: dict[tuple[str, int], float] = {}
        #: the next offset each partition should deliver (the stored position, as far as this worker knows)
        self._expected: dict[TopicPartition, int] = {}
        #: the consumer's position per partition after the fetches handed to ``select``: past the last record
        #: fetched, and past any control records (transaction markers) and aborted records after it
        self.consumed_to: dict[TopicPartition, int] = {}
        self.pipelined = pipelined
        given = application_name is not None and "application_name" not in conninfo_to_dict(database_url)
        self._connect_kwargs: dict[str, Any] = {"application_name": application_name} if given else {}
        #: what the pipelined pump fetched and decoded ahead; told of every seek, even while it is not running
        self._pipelined = PipelinedPump(self)
        self._last_seen: dict[tuple[str, int], float] = {}
        self.applied_total = 0
        self.redelivered_total = 0
        self.duplicates_total = 0

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect; join the group unless the active generation is older than this code (``run`` waits then)."""
        assert self.consumer is None and not self._started, "Did you call start twice?"
        self._started = True
        try:
            conn = await self.connection()
            opened = await self._load_generation(conn)
            if opened:
                await self._open_consumer()
        except BaseException:
            # ``async with`` calls no ``__aexit__`` for a failed start: close what it opened (a process that runs
            # several workers starts a failed one again, and must not leak a connection each time).
            await self.stop()
            raise
        if not opened:
            assert self._waiting_for is not None
            log.warning(
                "%s: the active generation is version %d, this code is version %d: waiting, writing nothing, "
                "until a generation of version %d is active (`agl projections rebuild %s`)",
                self.projection.name, self._waiting_for.version, self.projection.version,
                self.projection.version, self.projection.name,
            )  # fmt: skip

    async def _open_consumer(self) -> None:
        self.consumer = new_consumer(
            self.projection,
            bootstrap=self.bootstrap,
            topic_prefix=self.topic_prefix,
            use_group=self.use_group,
            batch_size=self.batch_size,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
        )
        await self.consumer.start()
        try:
            listener = _Rebalance(self) if self.use_group else None
            assigned = await take_partitions(self.consumer, self.projection, self.topic_prefix, listener)
            if assigned:  # without a group; in one, the listener seeks what the group assigns
                await self.seek_to_stored(assigned)
        except BaseException:
            await self.consumer.stop()
            self.consumer = None
            raise

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
            conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True, **self._connect_kwargs)
            try:
                await configure_session(conn)
            except BaseException:
                await conn.close()  # it broke as it opened: the next call opens another
                raise
            self._conn = conn
        return self._conn

    async def _load_generation(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Take the generation to write; ``False`` (and none taken) when the active one is of an older version.

        Raises:
            ProjectionVersionMismatch: the active generation is of a newer version than this code.
        """
        gen = self._fixed_generation or await ensure_active_generation(conn, self.projection)
        if gen.version != self.projection.version:
            refuse_newer(gen, self.projection)
            self.generation, self.processor, self._waiting_for = None, None, gen
            return False
        self.generation, self._waiting_for = gen, None
        self.processor = BatchProcessor(self.projection, gen, check_generation=self._fixed_generation is None)
        return True

    async def _await_own_version(self, stop: asyncio.Event | None) -> bool:
        """Poll until a generation of this code's version is active, then take it; ``False`` if stopped first."""
        taken = await await_own_version(
            self.projection, connection=self.connection, take=self._load_generation, stop=stop,
            poll_s=self.version_poll_s,
        )  # fmt: skip
        if taken:
            assert self.generation is not None
            log.info("%s: %s is of this version; writing it", self.projection.name, self.generation.schema)
        return taken

    async def seek_to_stored(self, tps: Sequence[TopicPartition]) -> None:
        """Seek each partition to the position PostgreSQL stores for it (0 when none)."""
        assert self.consumer is not None
        if self.generation is None:
            return  # waiting for a generation of this version: its positions are sought once it is active
        # Its own connection: the rebalance listener runs beside the loop, whose connection may be mid-batch.
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, **self._connect_kwargs
        ) as conn:
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
        self.consumed_to[tp] = offset
        self._pipelined.moved(tp, offset)
        self.consumer.seek(tp, offset)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in flight is finished (or rolled back) before returning.

        A worker whose version is newer than the active generation's first waits for one of its version.
        """
        if self.consumer is None:
            if not await self._await_own_version(stop):
                return
            await self._open_consumer()
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

        ``consumers.plain_pump`` is the whole loop; by default the same loop runs pipelined
        (``consumers.pipelined_pump``), which only changes when records are fetched, decoded and freed, and which
        share a batch.
        """
        if self.pipelined:
            await self._pipelined.run(stop, select, on_batch, until)
        else:
            await pump_plain(self, stop, select, on_batch, until)

    async def process(
        self, records: Sequence[Record], stop: asyncio.Event | None = None, *, decoded: Sequence[Decoded] | None = None
    ) -> BatchOutcome | None:
        """Apply one batch, retrying retriable failures with backoff; ``None`` if stopped while retrying."""
        delay = 0.1
        while True:
            assert self.processor is not None
            try:
                conn = await self.connection()
                outcome = await self.processor.process(conn, records, decoded=decoded, rates=self._rates)
            except GenerationChanged:
                await self._switch_generation(stop)
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

    async def _switch_generation(self, stop: asyncio.Event | None) -> None:
        """A rebuild (or a rollback) switched readers: continue on the new generation, from its own positions.

        One of a newer version stops this worker (``ProjectionVersionMismatch``); one of an older version (a
        rollback) makes it wait for a generation of its own version.
        """
        assert self.consumer is not None
        log.info("%s: generation switched; following the new one", self.projection.name)
        if not await self._load_generation(await self.connection()) and not await self._await_own_version(stop):
            return
        await self.seek_to_stored(list(self.consumer.assignment()))


async def run_until_stopped(worker: ProjectionWorker, stop: asyncio.Event) -> None:
    """Run ``worker`` until ``stop`` is set (by a signal handler), then stop it cleanly."""
    async with worker:
        with contextlib.suppress(asyncio.CancelledError):
            await worker.run(stop)
