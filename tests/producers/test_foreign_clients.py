"""Records written by other clients (confluent-kafka / librdkafka) with our JSON and headers decode like ours."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from producers.publisher import EventPublisher
from schemas import MalformedEvent, RolloutEnqueued, decode, encode
from schemas.topics import ROLLOUTS
from tests.fixtures.events import make_rollout_enqueued
from tests.fixtures.records import read_records

pytestmark = pytest.mark.kafka


def _produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes, Sequence[tuple[str, bytes]]]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    errors: list[object] = []

    def on_delivery(error: object, _: object) -> None:
        if error is not None:
            errors.append(error)

    for key, value, headers in records:
        producer.produce(topic, value=value, key=key, headers=list(headers), on_delivery=on_delivery)
    assert producer.flush(30) == 0, "confluent-kafka did not deliver everything in 30s"
    assert not errors


async def test_a_confluent_kafka_record_with_our_headers_decodes(kafka_bootstrap, kafka_topics):
    event = make_rollout_enqueued(source="/scripts/import")
    value, headers = encode(event)
    topic = ROLLOUTS.full_name(kafka_topics)
    await asyncio.to_thread(_produce, kafka_bootstrap, topic, [(event.key() or b"", value, headers)])
    (record,) = await read_records(kafka_bootstrap, topic, 1)
    assert decode(record.value, record.headers) == event


async def test_a_hand_written_record_with_envelope_in_headers_only_decodes(kafka_bootstrap, kafka_topics):
    """A script that writes only the domain fields as JSON and the CloudEvents attributes as headers."""
    body = {"rollout_id": "ro-script", "input": {"q": "hi"}}
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"01941e5a-0b2e-7000-8000-00000000abcd"),
        ("ce_type", b"rollout.enqueued"),
        ("ce_source", b"/scripts/bash"),
        ("ce_time", b"2025-03-04T05:06:07Z"),
        ("content-type", b"application/json; charset=utf-8"),
        ("event_version", b"1"),
    ]
    topic = ROLLOUTS.full_name(kafka_topics)
    await asyncio.to_thread(_produce, kafka_bootstrap, topic, [(b"ro-script", orjson.dumps(body), headers)])
    (record,) = await read_records(kafka_bootstrap, topic, 1)
    event = decode(record.value, record.headers)
    assert isinstance(event, RolloutEnqueued)
    assert (event.rollout_id, event.input, event.source) == ("ro-script", {"q": "hi"}, "/scripts/bash")
    assert str(event.event_id) == "01941e5a-0b2e-7000-8000-00000000abcd"
    assert event.occurred_at.isoformat() == "2025-03-04T05:06:07+00:00"


async def test_a_malformed_foreign_record_names_the_bad_field(kafka_bootstrap, kafka_topics):
    topic = ROLLOUTS.full_name(kafka_topics)
    bad = orjson.dumps({"type": "rollout.enqueued", "version": 1, "rollout_id": "ro-x", "priority": "high"})
    await asyncio.to_thread(_produce, kafka_bootstrap, topic, [(b"ro-x", bad, [("ce_type", b"rollout.enqueued")])])
    (record,) = await read_records(kafka_bootstrap, topic, 1)
    with pytest.raises(MalformedEvent, match=r"rollout.enqueued v1: input: Field required; priority: Input should be"):
        decode(record.value, record.headers)


def _partitions(bootstrap: str, topic: str, keys: Sequence[bytes], partitioner: str | None) -> dict[bytes, int]:
    """Where a librdkafka producer with ``partitioner`` (None: its default) puts each key."""
    config = {"bootstrap.servers": bootstrap, "acks": "all"} | ({"partitioner": partitioner} if partitioner else {})
    producer = Producer(config)
    landed: dict[bytes, int] = {}

    def on_delivery(error: object, message: Any) -> None:
        assert error is None, error
        landed[message.key()] = message.partition()

    for key in keys:
        producer.produce(topic, value=b"{}", key=key, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    return landed


async def test_murmur2_random_lands_each_key_where_our_publisher_does(kafka_bootstrap, kafka_topics):
    """The key -> partition contract (README, Events): murmur2 of the key bytes, modulo the partition count."""
    events = [make_rollout_enqueued(rollout_id=f"ro-contract-{i}") for i in range(64)]
    async with EventPublisher(kafka_bootstrap, topic_prefix=kafka_topics) as publisher:
        positions = await publisher.publish_many(events)
    ours = {event.key(): position.partition for event, position in zip(events, positions, strict=True)}
    assert len(set(ours.values())) == ROLLOUTS.partitions  # every partition gets keys: the comparison means something
    topic = ROLLOUTS.full_name(kafka_topics)
    keys = [k for k in ours if k is not None]
    theirs = await asyncio.to_thread(_partitions, kafka_bootstrap, topic, keys, "murmur2_random")
    assert theirs == ours
    # librdkafka's default (consistent_random, CRC32) does not keep the contract: why the setting is required.
    default = await asyncio.to_thread(_partitions, kafka_bootstrap, topic, keys, None)
    assert default != ours
