"""The partition of a keyed record, as aiokafka's default partitioner picks it, at a fraction of its cost.

The README's key -> partition contract: murmur2 of the key bytes, made positive, modulo the topic's partition
count. aiokafka's default partitioner computes it for every record in pure Python (several microseconds, more than
the rest of handing a record over), while a publish repeats few keys (a rollout's events share one): the hashes
are remembered here, and so is each topic's partition count until the producer's metadata changes.
"""

from __future__ import annotations

import random
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

#: Keys whose hash is remembered; past this many the memory starts over (ids come and go; memory stays bounded).
MAX_REMEMBERED_KEYS = 65_536


class KeyPartitions:
    """Remembered partitioning for one producer; ``watch`` it so that metadata updates reach it."""

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}
        self._counts: dict[str, int] = {}

    def watch(self, producer: AIOKafkaProducer) -> None:
        """Forget partition counts whenever the producer's metadata is updated (a topic may have gained some)."""
        producer.client.cluster.add_listener(self._forget_counts)

    def _forget_counts(self, _: Any) -> None:
        self._counts.clear()

    def known(self, producer: AIOKafkaProducer, topic: str, key: bytes | None) -> int | None:
        """The partition of ``key`` in ``topic``, or None when it takes more: no key (the producer picks at
        random), or a topic whose partitions the producer does not know yet (see ``fetched``)."""
        if key is None:
            return None
        count = self._counts.get(topic)
        if count is None:
            partitions = producer.client.cluster.partitions_for_topic(topic)
            if not partitions:
                return None
            # Kafka numbers a topic's partitions 0..n-1, so the default partitioner's pick is the index itself.
            count = self._counts[topic] = len(partitions)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= MAX_REMEMBERED_KEYS:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return hashed % count

    async def fetched(self, producer: AIOKafkaProducer, topic: str, key: bytes | None) -> int:
        """The partition of a record ``known`` could not place: the topic's metadata is fetched first, and a
        record without a key goes to a random partition with a leader, as the default partitioner does.

        Raises:
            KafkaError: the topic's metadata could not be fetched.
        """
        partitions = await producer.partitions_for(topic)
        if key is not None:
            partition = self.known(producer, topic, key)
            assert partition is not None, "the topic's partitions are known now"
            return partition
        available = producer.client.cluster.available_partitions_for_topic(topic)
        return int(random.choice(sorted(available or partitions)))  # noqa: S311 (spreading load, not a secret)
