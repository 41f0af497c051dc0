"""Handing encoded records to aiokafka's producer, and each record's Position (or error) once delivered.

Two ways, one result. ``hand_records`` send()s record by record: each joins the producer's lingering batch of its
partition, shared with concurrent publishes, so many small publishes travel together. ``hand_batches`` fills
batches of its own, one open per partition, and hands each over closed (a closed batch leaves without lingering)
when it is full and at the end: per record that costs an append, where send() also creates a future, runs two
coroutines and the partitioner. A record's offset is then its batch's base offset plus its place in the batch, as
Kafka numbers the records of a batch.

Either way, a chunk's deliveries are awaited by one ``settled`` call rather than by one callback per record (as
``asyncio.gather`` would), and only a send() that fails is an error here: delivery failures are returned.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas import Position

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from producers.partitioning import KeyPartitions

#: (topic, key, value, headers) of one record.
Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
#: (topic, partition)
Where = tuple[str, int]


@dataclass(frozen=True)
class Handed:
    """Records handed to the producer: what to await, and how each record maps onto it."""

    #: One per record (``places`` None), else one per batch.
    futures: list[asyncio.Future[Any]]
    #: Per record: its batch's place in ``futures``, and its offset in that batch (ints: nothing for the garbage
    #: collector to track).
    places: list[int] | None
    deltas: list[int] | None
    #: Why the producer refused a record (no metadata: the broker is gone). That record and the rest of the
    #: chunk are marked failed with it at once, rather than each after its own metadata timeout.
    error: KafkaError | None


async def hand_records(
    producer: AIOKafkaProducer, partitions: KeyPartitions, records: Iterator[Record], count: int
) -> Handed:
    """send() each of the ``count`` records ``records`` yields."""
    futures: list[asyncio.Future[Any]] = []
    try:
        for topic, key, value, headers in records:
            partition = partitions.known(producer, topic, key)
            futures.append(await producer.send(topic, value, key=key, partition=partition, headers=headers))
    except KafkaError as e:
        return all_failed(e, count, futures)
    return Handed(futures, None, None, None)


async def hand_batches(
    producer: AIOKafkaProducer, partitions: KeyPartitions, records: Iterator[Record], count: int
) -> Handed:
    """Put the ``count`` records ``records`` yields into batches of our own and hand those over."""
    #: Each batch's delivery, by place; None until the batch is handed over.
    futures: list[asyncio.Future[Any] | None] = []
    places: list[int] = []
    deltas: list[int] = []
    #: The open batch of each partition, and its place in ``futures``.
    open_batches: dict[Where, tuple[int, Any]] = {}

    def open_batch(where: Where) -> tuple[int, Any]:
        opened = open_batches[where] = (len(futures), producer.create_batch())
        futures.append(None)
        return opened

    try:
        for topic, key, value, headers in records:
            partition = partitions.known(producer, topic, key)
            if partition is None:
                partition = await partitions.fetched(producer, topic, key)
            where = (topic, partition)
            place, batch = open_batches.get(where) or open_batch(where)
            appended = batch.append(timestamp=None, key=key, value=value, headers=headers)
            if appended is None:
                # Full: hand it over and start the next. An empty batch takes any record, however large.
                del open_batches[where]
                futures[place] = await _hand_over(producer, batch, where)
                place, batch = open_batch(where)
                appended = batch.append(timestamp=None, key=key, value=value, headers=headers)
            places.append(place)
            deltas.append(appended.offset)
        while open_batches:
            where, (place, batch) = open_batches.popitem()
            futures[place] = await _hand_over(producer, batch, where)
    except KafkaError as e:
        # The batches not handed over fail with the records not yet placed.
        dead = _failed(e)
        left = count - len(places)
        places.extend(itertools.repeat(len(futures), left))
        deltas.extend(itertools.repeat(0, left))
        return Handed([dead if f is None else f for f in [*futures, None]], places, deltas, e)
    handed = [f for f in futures if f is not None]
    assert len(handed) == len(futures), "every batch was handed over"
    return Handed(handed, places, deltas, None)


def all_failed(error: KafkaError, count: int, futures: Iterable[asyncio.Future[Any]] = ()) -> Handed:
    """``count`` records: the first handed over (``futures``), the rest failed with ``error`` unsent."""
    handed = list(futures)
    handed.extend(itertools.repeat(_failed(error), count - len(handed)))
    return Handed(handed, None, None, error)


async def settled(handed: Handed) -> list[Position | BaseException]:
    """Each record's Position or the exception that kept it off the log, once every delivery is done."""
    for future in handed.futures:
        # Futures complete a batch at a time: this wakes about once per batch, not once per record.
        if not future.done():
            await asyncio.wait((future,))
    outcomes = [_outcome(future) for future in handed.futures]
    if handed.places is None or handed.deltas is None:
        return [_position(o, 0) for o in outcomes]
    return [_position(outcomes[place], delta) for place, delta in zip(handed.places, handed.deltas, strict=True)]


def _position(outcome: Any, delta: int) -> Position | BaseException:
    if isinstance(outcome, BaseException):
        return outcome
    # The broker's own answer: nothing to validate, and one Position per record adds up at tens of thousands a second.
    return Position.model_construct(topic=outcome.topic, partition=outcome.partition, offset=outcome.offset + delta)


async def _hand_over(producer: AIOKafkaProducer, batch: Any, where: Where) -> asyncio.Future[Any]:
    batch.close()
    future: asyncio.Future[Any] = await producer.send_batch(batch, where[0], partition=where[1])
    return future


def _outcome(future: asyncio.Future[Any]) -> Any:
    """The result or exception of a done future; reading the exception also marks it retrieved."""
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception() or future.result()


def _failed(error: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future
