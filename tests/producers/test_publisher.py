"""EventPublisher against the real broker: delivery, positions, keys, idempotence, lifecycle, failures."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from aiokafka.partitioner import murmur2

from agl.stack._process import free_port
from agl.stack.brokers import Tansu
from producers.errors import BrokerUnavailable, EventTooLarge, PublisherClosed
from producers.publisher import EventPublisher, PublisherConfig
from schemas import TOPIC_BY_EVENT, Position, decode, encode, parse_token, to_token
from schemas.topics import ROLLOUTS, SPANS
from tests.fixtures.events import make_rollout_enqueued, make_span, sample_events
from tests.fixtures.records import read_records

pytestmark = pytest.mark.kafka


async def test_every_event_type_round_trips_through_kafka(kafka_bootstrap, kafka_topics):
    events = sample_events(correlation_id="req-1")
    async with EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics) as publisher:
        positions = await publisher.publish_many(events)
    topics = Counter(p.topic for p in positions)
    assert set(topics) == {TOPIC_BY_EVENT[type(e)].full_name(kafka_topics) for e in events}
    records: dict[tuple[str, int, int], Any] = {}
    for topic, count in topics.items():
        records |= {(topic, r.partition, r.offset): r for r in await read_records(kafka_bootstrap, topic, count)}
    assert len(records) == len(events), "nothing more, nothing less"
    for event, position in zip(events, positions, strict=True):
        record = records[(position.topic, position.partition, position.offset)]
        assert record.key == event.key()
        assert decode(record.value, record.headers) == event


async def test_positions_are_distinct_offsets_in_the_keys_partition(kafka_bootstrap, kafka_topics):
    events = [make_span(rollout_id="ro-a", sequence_id=i) for i in range(50)]
    async with EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics) as publisher:
        positions = await publisher.publish_many(events)
    assert len({p.partition for p in positions}) == 1, "one rollout's spans share a partition"
    offsets = [p.offset for p in positions]
    assert offsets == sorted(offsets) and len(set(offsets)) == 50, "in order, none twice"
    token = to_token(positions)
    assert parse_token(token) == [positions[-1]]
    records = await read_records(kafka_bootstrap, SPANS.full_name(kafka_topics), 50)
    assert [decode(r.value, r.headers).sequence_id for r in records] == list(range(50))  # type: ignore[attr-defined]


async def test_a_large_publish_lands_every_record_at_its_position_in_order(kafka_bootstrap, kafka_topics):
    """Large publishes fill batches of their own: small batches (many per partition) and small chunks (several
    per publish) make every record's offset come from its batch's base offset plus its place in the batch."""
    config = PublisherConfig(max_batch_size=16 * 1024, max_in_flight=250)
    spans = [make_span(rollout_id=f"ro-big-{i % 7}", sequence_id=i) for i in range(700)]
    enqueued = [make_rollout_enqueued() for _ in range(50)]
    events = [e for pair in itertools.zip_longest(spans, enqueued) for e in pair if e is not None]
    async with EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics, config=config) as publisher:
        positions = await publisher.publish_many(events)
    assert len(set(positions)) == len(events), "one position each, none twice"
    records: dict[tuple[str, int, int], Any] = {}
    for spec, count in ((SPANS, len(spans)), (ROLLOUTS, len(enqueued))):
        read = await read_records(kafka_bootstrap, spec.full_name(kafka_topics), count)
        assert len(read) == count, "nothing more, nothing less"
        records |= {(r.topic, r.partition, r.offset): r for r in read}
    for event, position in zip(events, positions, strict=True):
        record = records[(position.topic, position.partition, position.offset)]
        assert decode(record.value, record.headers) == event
        assert record.key == event.key()
        spec = TOPIC_BY_EVENT[type(event)]
        assert position.partition == (murmur2(record.key) & 0x7FFFFFFF) % spec.partitions, "the README's contract"
    for key in {e.key() for e in spans}:
        offsets = [p.offset for e, p in zip(events, positions, strict=True) if e.key() == key]
        assert offsets == sorted(offsets), f"{key!r}: in publish order"


async def test_records_without_a_key_are_spread_and_found(kafka_bootstrap, kafka_topics):
    topic = SPANS.full_name(kafka_topics)
    value, headers = encode(make_span())
    async with EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics) as publisher:
        positions = await publisher.publish_records([(topic, None, value, headers)] * 100)
    read = await read_records(kafka_bootstrap, topic, 100)
    assert {(p.partition, p.offset) for p in positions} == {(r.partition, r.offset) for r in read}
    assert len(read) == 100 and all(r.key is None and r.value == value for r in read)
    if SPANS.partitions > 1:
        assert len({p.partition for p in positions}) > 1, "a random partition per batch, as aiokafka picks"


async def test_gathered_records_leave_at_once_while_a_lone_event_lingers(kafka_bootstrap, kafka_topics):
    """The outbox relay hands over all it has gathered: its few records must not wait ``linger_ms`` for more."""
    linger_s = 4.0
    config = PublisherConfig(linger_ms=int(linger_s * 1000))
    event = make_rollout_enqueued()
    value, headers = encode(event)
    record = (ROLLOUTS.full_name(kafka_topics), event.key(), value, headers)
    async with EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics, config=config) as publisher:
        await publisher.publish_records([record])  # metadata fetched: not part of what is timed
        t0 = time.monotonic()
        await publisher.publish_records([record, record])
        gathered_s = time.monotonic() - t0
        t0 = time.monotonic()
        await publisher.publish(make_rollout_enqueued())
        lone_s = time.monotonic() - t0
    assert gathered_s < linger_s / 2, f"relayed records waited {gathered_s:.2f}s"
    assert lone_s >= linger_s * 0.9, "a lone publish shares the producer's lingering batch (the setting works)"


async def test_idempotence_follows_what_the_broker_supports(kafka_broker, kafka_topics):
    async with EventPublisher(kafka_broker.bootstrap, topic_prefix=kafka_topics) as publisher:
        assert publisher.idempotent is kafka_broker.supports_idempotence
        await publisher.publish(make_rollout_enqueued())


@pytest.mark.parametrize(("bound", "per_publish"), [(8, 20), (50, 100)], ids=["record by record", "own batches"])
async def test_concurrent_publishes_wait_for_room_in_flight(kafka_bootstrap, kafka_topics, bound, per_publish):
    config = PublisherConfig(max_in_flight=bound)
    events = [make_rollout_enqueued() for _ in range(200)]
    seen: list[int] = []
    async with EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics, config=config) as publisher:

        async def watch() -> None:
            while True:
                seen.append(publisher.in_flight)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        publishes = (publisher.publish_many(events[i : i + per_publish]) for i in range(0, 200, per_publish))
        results = await asyncio.gather(*publishes)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        assert publisher.in_flight == 0, "all room is given back after delivery"
    assert max(seen) == bound, "the bound is reached and never exceeded"
    assert len({p for batch in results for p in batch}) == 200
    records = await read_records(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 200)
    assert {decode(r.value, r.headers).event_id for r in records} == {e.event_id for e in events}


async def test_lifecycle_guards(kafka_bootstrap, kafka_topics):
    publisher = EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics)
    with pytest.raises(PublisherClosed, match="not started"):
        await publisher.publish(make_rollout_enqueued())
    await publisher.start()
    with pytest.raises(AssertionError, match="start twice"):
        await publisher.start()
    await publisher.stop()
    await publisher.stop()  # a second stop is harmless
    with pytest.raises(PublisherClosed, match="stopped"):
        await publisher.publish(make_rollout_enqueued())


@pytest.mark.parametrize("before", [1, 300], ids=["one before", "a large publish"])
async def test_an_oversized_event_publishes_nothing(kafka_bootstrap, kafka_topics, before):
    """Even last in a large publish, whose records are sent while later ones are still being built."""
    config = PublisherConfig(max_request_size=64 * 1024)
    small = [make_rollout_enqueued() for _ in range(before)]
    big = make_rollout_enqueued(input="x" * 70_000)
    async with EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics, config=config) as publisher:
        with pytest.raises(EventTooLarge, match=r"rollout.enqueued .* bytes encoded"):
            await publisher.publish_many([*small, big])
        marker = await publisher.publish(make_rollout_enqueued())
    records = await read_records(kafka_bootstrap, ROLLOUTS.full_name(kafka_topics), 1)
    assert [decode(r.value, r.headers).event_id for r in records] == [decode_id(marker, records)]


def decode_id(position: Position, records: list[Any]) -> UUID:
    (record,) = [r for r in records if (r.partition, r.offset) == (position.partition, position.offset)]
    return decode(record.value, record.headers).event_id


async def test_start_gives_a_clear_error_when_no_broker_answers():
    config = PublisherConfig(retry_budget_s=1.0)
    port = free_port()
    t0 = time.monotonic()
    publisher = EventPublisher(f"127.0.0.1:{port}", config=config)
    with pytest.raises(BrokerUnavailable, match=rf"127.0.0.1:{port} stayed unreachable for 1s") as info:
        await publisher.start()
    assert info.value.retriable
    assert time.monotonic() - t0 < 10
    await publisher.stop()


async def test_publish_gives_a_clear_error_when_the_broker_goes_away(tmp_path: Path):
    """A broker of its own (Tansu starts in milliseconds), stopped under a running publisher."""
    broker = Tansu(data_dir=tmp_path / "tansu", port=free_port())
    await broker.start(30)
    try:
        from producers.admin import ensure_topics

        await ensure_topics(broker.info.bootstrap, [ROLLOUTS])
        config = PublisherConfig(retry_budget_s=2.0, idempotence=False)
        async with EventPublisher(broker.info.bootstrap, config=config) as publisher:
            await publisher.publish(make_rollout_enqueued())
            await broker.stop()
            t0 = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="stayed unreachable for 2s"):
                await publisher.publish(make_rollout_enqueued())
            assert time.monotonic() - t0 < 15
            t0 = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="stayed unreachable for 2s"):
                await publisher.publish_many([make_rollout_enqueued() for _ in range(300)])
            assert time.monotonic() - t0 < 15, "a large publish fails as soon"
    finally:
        await broker.stop()
