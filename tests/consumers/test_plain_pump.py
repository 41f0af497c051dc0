"""The worker's plain loop (``pipelined=False``): the correct pump without its optimisations, on a real broker.

The pipelined pump only changes when records are fetched, decoded and freed, and which share a batch; the plain
loop is what it must agree with. These tests hold the plain loop to the same contract: the read model equals the
reference fold, a stop mid-stream resumes without redelivery, rebalances lose and duplicate nothing, records of
aborted transactions are never applied.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consumers.worker import ProjectionWorker
from projections.rollouts import PROJECTION as ROLLOUTS
from schemas.topics import ROLLOUTS as ROLLOUTS_TOPIC
from tests.consumers.helpers import cancelled, lifecycle, publish, requeued_twice, retrying, running, wait_for_total
from tests.consumers.reference import reference_rows, stored_rows
from tests.consumers.test_transactions import rollout_ids, transactions

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


def plain_worker(kafka_bootstrap: str, pg_url: str, prefix: str, **kw: Any) -> ProjectionWorker:
    return ProjectionWorker(
        ROLLOUTS, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, pipelined=False, **kw
    )


def mixed(n: int) -> list[Any]:
    kinds = (retrying, requeued_twice, cancelled, lifecycle)
    return [e for i in range(n) for e in kinds[i % len(kinds)](i)]


async def test_the_plain_loop_builds_the_reference_and_resumes_where_it_stopped(kafka_bootstrap, kafka_topics, pg_url):
    events = mixed(40)
    await publish(kafka_bootstrap, kafka_topics, events)
    w = plain_worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False, batch_size=10)

    async def not_pipelined(*args: Any) -> None:
        raise AssertionError("pipelined=False ran the pipelined pump")

    w._pipelined.run = not_pipelined  # type: ignore[method-assign,assignment]
    async with w:
        stop = asyncio.Event()
        await asyncio.wait_for(w.pump(stop, w._unapplied, w._advance, until=lambda: w.applied_total >= 30), 30)
        assert 30 <= w.applied_total < len(events)
    # A new worker starts from the positions stored with the rows: nothing is applied twice.
    async with running(plain_worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False, batch_size=10)) as rest:
        await wait_for_total(pg_url, "rollouts_g1", len(events))
    assert (w.applied_total + rest.applied_total, rest.redelivered_total) == (len(events), 0)
    assert await stored_rows(pg_url, "rollouts_g1") == reference_rows(events)


async def test_plain_instances_through_rebalances_build_the_reference(kafka_bootstrap, kafka_topics, pg_url):
    events = mixed(1500)
    slices = [events[i : i + len(events) // 6 + 1] for i in range(0, len(events), len(events) // 6 + 1)]

    def member() -> ProjectionWorker:
        return plain_worker(
            kafka_bootstrap, pg_url, kafka_topics, batch_size=200, session_timeout_ms=6000, heartbeat_interval_ms=500
        )

    async with running(member()) as first, running(member()) as second:
        for k, part in enumerate(slices):
            await publish(kafka_bootstrap, kafka_topics, part)
            if k == 2:  # a third member joins mid-flow and leaves again: partitions move twice
                async with running(member()) as third:
                    await asyncio.sleep(3)
        await wait_for_total(pg_url, "rollouts_g1", len(events), timeout=120)
    assert first.applied_total > 0 and second.applied_total > 0, (first.applied_total, second.applied_total)
    # Each event applied once, by whichever member owned its partition at the time.
    assert first.applied_total + second.applied_total + third.applied_total == len(events)
    assert await stored_rows(pg_url, "rollouts_g1") == reference_rows(events)


async def test_the_plain_loop_never_applies_aborted_records_and_reads_past_markers(
    kafka_broker, kafka_bootstrap, kafka_topics, pg_url
):
    if kafka_broker.kind == "tansu":
        pytest.skip("Tansu does not implement transactions (aborted records are served as committed)")
    topic = ROLLOUTS_TOPIC.full_name(kafka_topics)
    aborted, committed = [f"ro-aborted-{i}" for i in range(8)], [f"ro-committed-{i}" for i in range(8)]
    await asyncio.to_thread(transactions, kafka_bootstrap, topic, aborted, committed)
    async with running(plain_worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False)) as w:
        for _ in range(300):
            if set(committed) <= await rollout_ids(pg_url, "rollouts_g1"):
                break
            await asyncio.sleep(0.1)
        assert w.consumer is not None
        ends = await w.consumer.end_offsets(list(w.consumer.assignment()))
        for _ in range(100):  # the consumer moves past each partition's trailing commit marker
            if all(w.consumed_to.get(tp, 0) >= end for tp, end in ends.items()):
                break
            await asyncio.sleep(0.1)
    ids = await rollout_ids(pg_url, "rollouts_g1")
    assert set(committed) <= ids and not ids & set(aborted)
    assert all(w.consumed_to.get(tp, 0) >= end for tp, end in ends.items()), (w.consumed_to, ends)
