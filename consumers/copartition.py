"""One owner per entity across topics: partition p of every topic a projection reads goes to the same member.

A rollout's events live in ``agl.rollouts.v1[p]`` and ``agl.attempts.v1[p]`` (same key, same partitioner, same
partition count). aiokafka's default round-robin assignor hands those two partitions to different members, and
two batches of one rollout then run at once on two instances. This assignor gives each member a contiguous range
of partition *numbers* and every subscribed topic's partition of those numbers (Kafka Streams calls it
co-partitioning). It only holds when the topics have equal partition counts, which ``require_copartitioned``
checks before a worker joins the group.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

from consumers.errors import TopicsNotCoPartitioned

log = logging.getLogger(__name__)


def ranges(partitions: list[int], members: list[str]) -> dict[str, list[int]]:
    """Split sorted partition numbers into contiguous ranges, one per sorted member (the first get one more)."""
    share, extra = divmod(len(partitions), len(members)) if members else (0, 0)
    out: dict[str, list[int]] = {}
    start = 0
    for i, member in enumerate(members):
        size = share + (1 if i < extra else 0)
        out[member] = partitions[start : start + size]
        start += size
    return out


class CoPartitionedAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Range assignment over partition numbers, the same for every topic (see the module docstring)."""

    name = "agl-copartitioned"
    version = 0

    @classmethod
    def assign(
        cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({t for meta in members.values() for t in meta.subscription})
        counts = {t: len(cluster.partitions_for_topic(t) or ()) for t in topics}
        if len(set(counts.values())) > 1:
            # Workers refuse to start in this case; a topic changed under a running group still gets assigned.
            log.warning("topics of one group have unequal partition counts %s: entities may have two owners", counts)
        assignment: dict[str, dict[str, list[int]]] = {m: {} for m in members}
        for topic in topics:
            # Members of one projection subscribe to the same topics; the sort makes every topic's split equal.
            subscribed = sorted(m for m, meta in members.items() if topic in meta.subscription)
            numbers = sorted(cluster.partitions_for_topic(topic) or ())
            for member, parts in ranges(numbers, subscribed).items():
                if parts:
                    assignment[member][topic] = parts
        return {
            member: ConsumerProtocolMemberAssignment(cls.version, sorted(per_topic.items()), b"")
            for member, per_topic in assignment.items()
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        return


def require_copartitioned(partition_counts: Mapping[str, int]) -> None:
    """Refuse topics whose partition counts differ: the same key would land on different partition numbers."""
    missing = sorted(t for t, n in partition_counts.items() if n == 0)
    if missing:
        raise TopicsNotCoPartitioned(f"topic {', '.join(missing)} does not exist; create the topics first (`agl up`)")
    if len(set(partition_counts.values())) > 1:
        listed = ", ".join(f"{t} has {n}" for t, n in sorted(partition_counts.items()))
        raise TopicsNotCoPartitioned(
            f"a projection's topics must have equal partition counts, so that one key maps to one partition number "
            f"in each ({listed}); recreate or repartition them to the same count"
        )
