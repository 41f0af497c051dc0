"""EventPublisher: typed events onto their registry topics, with delivery confirmed.

Lifecycle (aiokafka style): ``__init__`` does no I/O; ``await start()`` connects (once: a second call is a bug);
``await stop()`` flushes what is in flight and is safe to repeat; ``async with`` does both.

Guarantees:
- ``acks=all``; idempotence where the broker supports it (detected at start when not configured: Tansu
  rejects aiokafka's InitProducerId, Apache Kafka accepts it).
- Each event goes to ``TOPIC_BY_EVENT[type(event)]`` keyed by its ``key()``, so a rollout's events share a
  partition (the default partitioner's choice, remembered per key: ``producers.partitioning``). ``publish_many``
  hands every record to the producer before awaiting any delivery, so records travel in compressed batches rather
  than one round trip each; a large publish fills batches of its own (``producers.handover``).
- ``publish_many`` encodes and size-checks every event's value before the first record is sent (a too-large event
  publishes nothing); keys and headers, which cannot fail once the value is encoded, are built as records are
  handed to the producer, so that work overlaps with the broker's on the batches already sent.
- At most ``max_in_flight`` records wait for delivery; further ``publish`` calls wait for room (backpressure).
- Retriable failures are retried with exponential backoff until ``retry_budget_s`` has passed, then
  :class:`BrokerUnavailable` names the broker and the last error. A retried record may be written twice (the
  first attempt may have landed); consumers deduplicate by ``event_id``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, UnknownError, UnsupportedVersionError

from producers.errors import BrokerUnavailable, EventTooLarge, PublisherClosed, PublishError
from producers.handover import Handed, Record, all_failed, hand_batches, hand_records, settled
from producers.metrics import count_published, record_type
from producers.partitioning import KeyPartitions
from schemas import TOPIC_BY_EVENT, Position
from schemas.codec import encode_headers, encode_value

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from schemas import Event

log = logging.getLogger(__name__)

#: Records sent between two checks of the in-flight bound (at most max_in_flight).
_CHUNK = 1000
#: From this many records, a publish fills batches of its own; smaller ones send() record by record, so that
#: concurrent small publishes share the producer's batches (``producers.handover``).
_OWN_BATCHES_FROM = 64

__all__ = ["EventPublisher", "PublisherConfig", "Record"]


@dataclass(frozen=True)
class PublisherConfig:
    """Tuning of the publisher. The defaults favour throughput at a few milliseconds of added latency."""

    #: True/False force idempotence on/off; None tries it and falls back when the broker refuses it.
    idempotence: bool | None = None
    #: How long a batch may wait for more records; 5 ms fills batches under load without hurting latency.
    linger_ms: int = 5
    max_batch_size: int = 256 * 1024
    compression_type: str | None = "lz4"
    #: The largest record sent; larger events are refused before anything is sent.
    max_request_size: int = 1024 * 1024
    #: Records handed to the producer and not yet acknowledged; further publishes wait for room.
    max_in_flight: int = 20_000
    #: How long retriable failures (unreachable broker, leader changes, timeouts) are retried.
    retry_budget_s: float = 30.0
    retry_backoff_s: float = 0.1
    client_id: str = "agl-publisher"


class EventPublisher:
    """Publishes events to Kafka and returns the Position of each. See the module docstring for guarantees."""

    def __init__(self, bootstrap: str, *, topic_prefix: str = "", config: PublisherConfig | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.config = config or PublisherConfig()
        self._producer: AIOKafkaProducer | None = None
        self._closed = False
        #: Records handed to the producer and not yet acknowledged; ``_room`` is set whenever some are.
        self._in_flight = 0
        self._room = asyncio.Event()
        self._topics = {cls: spec.full_name(topic_prefix) for cls, spec in TOPIC_BY_EVENT.items()}
        self._partitions = KeyPartitions()
        #: Whether the running producer is idempotent; known after start().
        self.idempotent: bool | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, retrying an unreachable broker until the retry budget is spent.

        Raises:
            BrokerUnavailable: no broker answered within ``retry_budget_s``.
            PublishError: idempotence was required but the broker refuses it.
        """
        assert self._producer is None, "Did you call start twice?"
        if self._closed:
            raise PublisherClosed("this publisher was stopped; create a new one")
        self._producer = await self._connect()

    async def stop(self) -> None:
        """Deliver what is in flight, then disconnect. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._producer is not None:
            await self._producer.stop()

    async def __aenter__(self) -> EventPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _new_producer(self, idempotent: bool) -> AIOKafkaProducer:
        c = self.config
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=c.client_id,
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=c.linger_ms,
            max_batch_size=c.max_batch_size,
            compression_type=c.compression_type,
            max_request_size=c.max_request_size,
            # One delivery attempt may take the whole budget; our own retries cover what is left.
            request_timeout_ms=max(1000, int(c.retry_budget_s * 1000)),
            retry_backoff_ms=int(c.retry_backoff_s * 1000),
        )

    async def _connect(self) -> AIOKafkaProducer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.retry_budget_s
        idempotent = self.config.idempotence is not False
        backoff = self.config.retry_backoff_s
        while True:
            producer = self._new_producer(idempotent)
            try:
                await producer.start()
            except (UnknownError, UnsupportedVersionError) as e:
                await producer.stop()
                if self.config.idempotence is True or not idempotent:
                    raise PublishError(f"Kafka at {self.bootstrap} refused the producer: {e!r}") from e
                log.info("Kafka at %s refuses idempotent producers; publishing without idempotence", self.bootstrap)
                idempotent = False
                continue
            except KafkaConnectionError as e:
                await producer.stop()
                if loop.time() + backoff > deadline:
                    raise self._unavailable(e) from e
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            self.idempotent = idempotent
            self._partitions.watch(producer)
            return producer

    def _unavailable(self, error: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"Kafka at {self.bootstrap} stayed unreachable for {self.config.retry_budget_s:g}s: {error!r}"
        )

    @property
    def in_flight(self) -> int:
        """Records handed to the producer and not yet acknowledged (never above ``config.max_in_flight``)."""
        return self._in_flight

    # -- publishing ------------------------------------------------------------------------------------------
    async def publish(self, event: Event) -> Position:
        """Publish one event and wait until the broker has it; returns where it landed."""
        return (await self.publish_many([event]))[0]

    async def publish_many(self, events: Sequence[Event]) -> list[Position]:
        """Publish events (in order per key) and wait for all of them; returns their positions, in order.

        Every event's value is encoded and size-checked before the first is sent, so a too-large event publishes
        nothing; the rest of each record is built as it is sent (see the module docstring).
        """
        values = [self._checked_value(event) for event in events]

        def record_at(index: int) -> Record:
            # Built when sent and dropped once in its batch (rebuilt to be resent): a publish keeps no record
            # alive, which spares the garbage collector most of its work on large ones.
            event = events[index]
            return self._topics[type(event)], event.key(), values[index], encode_headers(event)

        positions = await self._publish(record_at, len(values))
        count_published(event.type for event in events)
        return positions

    def record_of(self, event: Event) -> Record:
        """The Kafka record of ``event``: its topic (with prefix), key, JSON value and CloudEvents headers."""
        value = self._checked_value(event)
        return self._topics[type(event)], event.key(), value, encode_headers(event)

    def _checked_value(self, event: Event) -> bytes:
        """The value of ``event``, once everything about its record that can fail has passed: its topic, its
        encoding, its size. (Its key and headers only format fields the value holds.)"""
        if type(event) not in self._topics:
            raise PublishError(f"{type(event).__name__} has no topic in the registry (schemas/topics.py)")
        value = encode_value(event)
        # The record also carries the key and headers; leave them room below the limit.
        if len(value) > self.config.max_request_size - 1024:
            raise EventTooLarge(
                f"{event.type} {event.event_id} is {len(value)} bytes encoded; "
                f"the limit is {self.config.max_request_size - 1024}"
            )
        return value

    async def publish_records(self, records: Sequence[Record]) -> list[Position]:
        """Send encoded records; retriable failures are resent until the retry budget is spent.

        The records leave at once, in batches of their own: the caller (the outbox relay) hands over everything it
        has gathered, so lingering for more would only delay them (by ``linger_ms`` on every quiet publish).
        """
        positions = await self._publish(records.__getitem__, len(records), linger=False)
        count_published(map(record_type, records))
        return positions

    async def _publish(self, record_at: Callable[[int], Record], count: int, *, linger: bool = True) -> list[Position]:
        """Send records 0 to ``count - 1`` (``record_at`` builds each), then resend the retriable failures.

        ``linger``: a small publish may wait in the producer's batches for concurrent ones (else it leaves at once).
        """
        producer = self._require_started()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.retry_budget_s
        backoff = self.config.retry_backoff_s
        positions: list[Position | None] = [None] * count
        pending: Sequence[int] = range(count)
        while pending:
            results = await self._send_all(producer, map(record_at, pending), len(pending), linger=linger)
            failed: list[int] = []
            last_error: BaseException | None = None
            for index, result in zip(pending, results, strict=True):
                if isinstance(result, BaseException):
                    failed.append(self._check_retriable(index, result, count))
                    last_error = result
                else:
                    positions[index] = result
            if last_error is not None and loop.time() + backoff > deadline:
                raise self._unavailable(last_error) from last_error
            if failed:
                log.warning("%d of %d records failed retriably; retrying in %.1fs", len(failed), count, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            pending = failed
        return [p for p in positions if p is not None]

    def _check_retriable(self, index: int, error: BaseException, total: int) -> int:
        if isinstance(error, KafkaError) and error.retriable:
            return index
        raise PublishError(f"record {index + 1} of {total} was not published: {error!r}") from error

    async def _send_all(
        self, producer: AIOKafkaProducer, records: Iterator[Record], count: int, *, linger: bool
    ) -> list[Position | BaseException]:
        """Hand ``count`` records to the producer, then await all deliveries: each record's Position, or the
        exception that kept it off the log (returned, not raised). In-flight room is taken and given back per
        chunk rather than per record."""
        # Large publishes, and those that must not linger, fill batches of their own; small ones share the
        # producer's (see producers.handover).
        hand = hand_records if linger and count < _OWN_BATCHES_FROM else hand_batches
        chunks: list[asyncio.Task[list[Position | BaseException]]] = []
        size = min(_CHUNK, self.config.max_in_flight)
        left = count
        while left:
            chunk_size = min(size, left)
            left -= chunk_size
            await self._reserve(chunk_size)
            try:
                handed = await hand(producer, self._partitions, itertools.islice(records, chunk_size), chunk_size)
            except BaseException:
                # Cancelled: no task will give this chunk's room back.
                self._give_back(chunk_size)
                raise
            chunks.append(asyncio.create_task(self._settle(handed, chunk_size)))
            if handed.error is not None and left:
                # The rest would fail alike, each after a metadata timeout: they fail at once, unsent.
                chunks.append(asyncio.create_task(self._settle(all_failed(handed.error, left), 0)))
                left = 0
        return [result for chunk_results in await asyncio.gather(*chunks) for result in chunk_results]

    async def _settle(self, handed: Handed, reserved: int) -> list[Position | BaseException]:
        try:
            return await settled(handed)
        finally:
            self._give_back(reserved)

    async def _reserve(self, count: int) -> None:
        """Wait until ``count`` more records may be in flight (backpressure), then take the room."""
        while self._in_flight and self._in_flight + count > self.config.max_in_flight:
            self._room.clear()
            await self._room.wait()
        self._in_flight += count

    def _give_back(self, count: int) -> None:
        self._in_flight -= count
        self._room.set()

    def _require_started(self) -> AIOKafkaProducer:
        if self._closed:
            raise PublisherClosed("the publisher was stopped")
        if self._producer is None:
            raise PublisherClosed("the publisher was not started (call `await publisher.start()`)")
        return self._producer
