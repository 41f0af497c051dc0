"""Several instances of one projection: one owner per entity across topics, through rebalances.

A rollout's events come from two topics. Three instances in one group, members leaving and joining while
~50k events flow, must build exactly the tables one instance builds alone from the same events. The comparison
is row by row against that single-instance run, not against hard-coded statuses, so it holds whatever the fold.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

import pytest

from consumers.copartition import CoPartitionedAssignor
from consumers.errors import TopicsNotCoPartitioned
from consumers.worker import ProjectionWorker
from projections.rollouts import PROJECTION as ROLLOUTS
from schemas.topics import RESOURCES
from schemas.topics import ROLLOUTS as ROLLOUTS_TOPIC
from tests.consumers.helpers import cancelled, lifecycle, publish, requeued_twice, retrying, wait_for_total
from tests.consumers.reference import table_rows

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

ROLLOUTS_N = 12_500  # about 50k events


def mixed(n: int) -> list[Any]:
    events: list[Any] = []
    for i in range(n):
        kind = i % 10
        if kind == 0:
            events += retrying(i)
        elif kind == 1:
            events += requeued_twice(i)
        elif kind == 2:
            events += cancelled(i)
        else:
            events += lifecycle(i, outcome="failed" if kind == 3 else "succeeded")
    return events


@dataclass
class Member:
    worker: ProjectionWorker
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def leave(self) -> None:
        self.stop.set()
        try:
            await asyncio.wait_for(self.task, 60)
        finally:
            await self.worker.stop()


async def join(kafka_bootstrap: str, pg_url: str, prefix: str) -> Member:
    worker = ProjectionWorker(
        ROLLOUTS, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, batch_size=500,
        session_timeout_ms=6000, heartbeat_interval_ms=500,
    )  # fmt: skip
    stop = asyncio.Event()
    await worker.start()
    return Member(worker, stop, asyncio.create_task(worker.run(stop)))


async def test_three_instances_with_rebalances_build_what_one_instance_builds(kafka_bootstrap, kafka_topics, pg_url):
    events = mixed(ROLLOUTS_N)
    # Rollouts are published a slice at a time, each slice's events on both topics, while members come and go.
    slices = [events[i : i + len(events) // 10 + 1] for i in range(0, len(events), len(events) // 10 + 1)]
    members = [await join(kafka_bootstrap, pg_url, kafka_topics) for _ in range(3)]
    everyone = list(members)
    try:
        for k, part in enumerate(slices):
            await publish(kafka_bootstrap, kafka_topics, part)
            if k == 2:
                await members.pop(2).leave()  # a member leaves mid-flow: its partitions move to the others
            elif k == 4:
                members.append(await join(kafka_bootstrap, pg_url, kafka_topics))
                everyone.append(members[-1])
            elif k == 6:
                await members.pop(0).leave()
                members.append(await join(kafka_bootstrap, pg_url, kafka_topics))
                everyone.append(members[-1])
        await wait_for_total(pg_url, "rollouts_g1", len(events), timeout=240)
    finally:
        for member in members:
            await member.leave()
    assert sum(m.worker.applied_total > 0 for m in everyone) >= 3, [m.worker.applied_total for m in everyone]

    single = replace(ROLLOUTS, name="single")
    alone = ProjectionWorker(
        single, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, use_group=False
    )
    stop = asyncio.Event()
    async with alone:
        task = asyncio.create_task(alone.run(stop))
        try:
            await wait_for_total(pg_url, "single_g1", len(events), timeout=240)
        finally:
            stop.set()
            await task
    many, one = (
        await table_rows(pg_url, "rollouts_g1", ROLLOUTS.tables),
        await table_rows(pg_url, "single_g1", ROLLOUTS.tables),
    )
    for table in ROLLOUTS.tables:
        differ = sorted(set(many[table]) ^ set(one[table]))
        assert many[table] == one[table], f"{table}: {len(differ)} rows differ, e.g. {differ[:4]}"


async def test_the_group_gives_partition_p_of_every_topic_to_one_member(kafka_bootstrap, kafka_topics, pg_url):
    members = [await join(kafka_bootstrap, pg_url, kafka_topics) for _ in range(3)]
    try:
        for _ in range(200):
            owned = [m.worker.consumer.assignment() if m.worker.consumer else set() for m in members]
            if sum(map(len, owned)) == 2 * ROLLOUTS_TOPIC.partitions and all(owned):
                break
            await asyncio.sleep(0.1)
        numbers = [{tp.partition for tp in tps} for tps in owned]
        for tps, nums in zip(owned, numbers, strict=True):
            # Each member holds both topics' partitions of the same numbers, and no number has two owners.
            assert {(t, p) for t in {tp.topic for tp in tps} for p in nums} == {(tp.topic, tp.partition) for tp in tps}
            assert len({tp.topic for tp in tps}) == 2, owned
        assert sum(map(len, numbers)) == len(set().union(*numbers)) == ROLLOUTS_TOPIC.partitions, owned
        assert all(m.worker.consumer is not None for m in members)
        assert CoPartitionedAssignor.name == "agl-copartitioned"
    finally:
        for member in members:
            await member.leave()


async def test_topics_with_unequal_partition_counts_are_refused(kafka_bootstrap, kafka_topics, pg_url):
    # rollouts has 4 partitions, resources 1: the same key would map to different partition numbers.
    skewed = replace(ROLLOUTS, name="skewed", topics=(ROLLOUTS_TOPIC, RESOURCES))
    worker = ProjectionWorker(skewed, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    with pytest.raises(TopicsNotCoPartitioned, match=r"equal partition counts.*has 1.*has 4"):
        await worker.start()
    await worker.stop()
