"""The Kafka consumer a projection worker reads with: its group, fetch sizes, isolation and partitions.

Offsets are never committed to Kafka (positions live in PostgreSQL, see ``consumers.worker``), so the consumer
resets to the earliest offset and the worker seeks every partition it is given to its stored position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from consumers.copartition import CoPartitionedAssignor, require_copartitioned
from consumers.errors import ConsumerError

if TYPE_CHECKING:
    from projections.base import Projection

#: Fetch sizes: large enough that the background fetcher keeps a few batches buffered while the loop is busy
#: in PostgreSQL (aiokafka fetches a partition again once its buffered records are handed out).
FETCH_SETTINGS: dict[str, Any] = {
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
}
#: What a lingering projection's fetch waits for (or its ``linger_ms``): 1 MiB, a large batch of our events.
LINGER_MIN_BYTES = 1 << 20


def fetch_settings(projection: Projection) -> dict[str, Any]:
    """The consumer's fetch sizes, and for a projection that lingers, how long the broker may hold a fetch."""
    if projection.linger_ms <= 0:
        return FETCH_SETTINGS
    return {**FETCH_SETTINGS, "fetch_min_bytes": LINGER_MIN_BYTES, "fetch_max_wait_ms": projection.linger_ms}


def group_id(projection: str, prefix: str) -> str:
    """Consumer group of a projection: its name, under the deployment's topic prefix."""
    return f"{prefix}agl.projection.{projection}"


def new_consumer(
    projection: Projection,
    *,
    bootstrap: str,
    topic_prefix: str,
    use_group: bool,
    batch_size: int,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
) -> AIOKafkaConsumer:
    """The consumer, not started: in the projection's group (or none, for a worker given every partition)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id(projection.name, topic_prefix) if use_group else None,
        enable_auto_commit=False,
        # Never "latest": Tansu's end offsets are wrong, and a reset racing our seek must land low, not high.
        auto_offset_reset="earliest",
        # Records of aborted transactions never reach apply, and open ones hold the partition at the LSO.
        isolation_level="read_committed",
        partition_assignment_strategy=(CoPartitionedAssignor,),
        max_poll_records=batch_size,
        **fetch_settings(projection),
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
    )


async def take_partitions(
    consumer: AIOKafkaConsumer, projection: Projection, topic_prefix: str, listener: ConsumerRebalanceListener | None
) -> list[TopicPartition]:
    """Subscribe in the group (``listener`` given: it seeks what the group assigns), or assign every partition.

    Returns the partitions assigned here (none in a group: those come to the listener).

    Raises:
        ConsumerError: a group projection that locks keys reads topics partitioned differently; or, without a
            group, none of its topics exists.
    """
    topics = projection.topic_names(topic_prefix)
    # The consumer's own metadata holds only subscribed topics; ask the cluster for these.
    cluster = await consumer._client.fetch_all_metadata()
    if listener is not None:
        if projection.lock_keys and len(topics) > 1:
            require_copartitioned({t: len(cluster.partitions_for_topic(t) or ()) for t in topics})
        consumer.subscribe(topics, listener=listener)
        return []
    tps = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
    if not tps:
        raise ConsumerError(f"none of {', '.join(topics)} exists; create the topics first (`agl up` does)")
    consumer.assign(tps)
    return tps
