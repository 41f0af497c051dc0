"""The consumer loop against a real broker and PostgreSQL: positions, redelivery, re-publication."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from aiokafka import TopicPartition

from consumers.worker import ProjectionWorker
from projections.rollouts import PROJECTION as ROLLOUTS
from tests.consumers.helpers import fetch_all, lifecycle, publish, requeued_twice, running, wait_for_total
from tests.consumers.reference import reference_rows, stored_rows

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


def worker(kafka_bootstrap, pg_url, prefix, **kw) -> ProjectionWorker:
    return ProjectionWorker(ROLLOUTS, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, **kw)


async def test_events_are_applied_and_positions_stored_with_them(kafka_bootstrap, kafka_topics, pg_url):
    events = [e for i in range(10) for e in lifecycle(i, outcome="succeeded" if i % 2 else "failed")]
    await publish(kafka_bootstrap, kafka_topics, events)
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        await wait_for_total(pg_url, "rollouts_g1", len(events))
    rows = await fetch_all(pg_url, "SELECT status, count(*) FROM rollouts_g1.rollouts GROUP BY status ORDER BY 1")
    assert rows == [("failed", 5), ("succeeded", 5)]
    attempts = await fetch_all(
        pg_url, "SELECT count(*) FROM rollouts_g1.attempts WHERE last_heartbeat_time IS NOT NULL"
    )
    assert attempts == [(10,)]


#: The rollouts read model with every event tracked by the event-id ledger (none declared idempotent): what a
#: projection whose apply is not idempotent gets from the engine.
TRACKED = replace(ROLLOUTS, name="tracked", idempotent_types=frozenset())


def tracked_worker(kafka_bootstrap, pg_url, prefix, **kw) -> ProjectionWorker:
    return ProjectionWorker(TRACKED, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, **kw)


async def test_a_republished_event_has_no_effect(kafka_bootstrap, kafka_topics, pg_url):
    first = requeued_twice(1)
    await publish(kafka_bootstrap, kafka_topics, first)
    async with running(tracked_worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False)) as w:
        await wait_for_total(pg_url, "tracked_g1", len(first))
        assert await fetch_all(pg_url, "SELECT status FROM tracked_g1.rollouts") == [("requeuing",)]
        # The same events again (same event ids, new offsets), e.g. a producer retry after a lost ack, then one
        # more copy of the first decision.
        await publish(kafka_bootstrap, kafka_topics, [*first, first[2]])
        await wait_for_total(pg_url, "tracked_g1", 2 * len(first) + 1)
    assert w.duplicates_total == len(first) + 1
    rows = await fetch_all(pg_url, "SELECT event_id::text FROM tracked_g1.applied_events")
    assert {r[0] for r in rows} == {str(e.event_id) for e in first}
    rows = await fetch_all(pg_url, "SELECT rollout_id, status, attempt_count FROM tracked_g1.rollouts")
    assert rows == [("ro-00001", "requeuing", 2)]


async def test_a_restarted_worker_resumes_from_stored_positions(kafka_bootstrap, kafka_topics, pg_url):
    n = len(lifecycle(1))
    await publish(kafka_bootstrap, kafka_topics, lifecycle(1))
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False)):
        await wait_for_total(pg_url, "rollouts_g1", n)
    await publish(kafka_bootstrap, kafka_topics, lifecycle(2))
    second = worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False)
    async with running(second):
        await wait_for_total(pg_url, "rollouts_g1", 2 * n)
    # The second worker started at the stored positions: it saw only the new rollout's events.
    assert (second.applied_total, second.redelivered_total) == (n, 0)
    assert await fetch_all(pg_url, "SELECT count(*) FROM rollouts_g1.rollouts") == [(2,)]


async def test_copies_of_an_event_within_one_batch_apply_once(kafka_bootstrap, kafka_topics, pg_url):
    first = requeued_twice(1)
    # The copy is on the broker before the worker starts, so it arrives in the same batch as the original.
    await publish(kafka_bootstrap, kafka_topics, [*first, first[2]])
    w = tracked_worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False)
    async with running(w):
        await wait_for_total(pg_url, "tracked_g1", len(first) + 1)
    assert (w.duplicates_total, w.redelivered_total) == (1, 0)
    assert await fetch_all(pg_url, "SELECT count(*) FROM tracked_g1.applied_events") == [(len(first),)]
    assert await fetch_all(pg_url, "SELECT rollout_id, status, attempt_count FROM tracked_g1.rollouts") == [
        ("ro-00001", "requeuing", 2)
    ]


async def test_a_prefetched_batch_left_behind_is_given_back(kafka_bootstrap, kafka_topics, pg_url):
    # pump() fetches the next batch while applying one; stopping with that prefetch in hand must not skip it.
    events = [e for i in range(30) for e in lifecycle(i)]
    await publish(kafka_bootstrap, kafka_topics, events)
    async with worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False, batch_size=10) as w:
        stop = asyncio.Event()
        await asyncio.wait_for(w.pump(stop, w._unapplied, w._advance, until=lambda: w.applied_total >= 20), 30)
        assert w.applied_total < len(events)
        rest = w.pump(stop, w._unapplied, w._advance, until=lambda: w.applied_total >= len(events))
        await asyncio.wait_for(rest, 30)
    assert (w.applied_total, w.redelivered_total) == (len(events), 0)
    assert await stored_rows(pg_url, "rollouts_g1") == reference_rows(events)


async def test_a_prefetched_batch_is_dropped_when_its_partitions_were_moved(kafka_bootstrap, kafka_topics, pg_url):
    # As when a rebuild switches generations: the batch in hand is not applied and its partitions are moved back
    # to the stored positions. The batch prefetched meanwhile comes after it: applying that one would skip the
    # unapplied records for good.
    events = [e for i in range(30) for e in lifecycle(i)]
    await publish(kafka_bootstrap, kafka_topics, events)
    w = worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False, batch_size=10)
    process, moved = w.process, list[TopicPartition]()

    async def lose_the_first_batch(records: Any, stop: Any = None, *, decoded: Any = None) -> Any:
        if moved:
            return await process(records, stop, decoded=decoded)
        await asyncio.sleep(0.5)  # the next batch is fetched meanwhile
        moved.extend({TopicPartition(r.topic, r.partition) for r in records})
        for tp in moved:
            w.seek(tp, w._expected.get(tp, 0))
        return None

    w.process = lose_the_first_batch  # type: ignore[method-assign]
    async with w:
        stop = asyncio.Event()
        await asyncio.wait_for(w.pump(stop, w._unapplied, w._advance, until=lambda: w.applied_total >= len(events)), 30)
    assert moved
    assert await stored_rows(pg_url, "rollouts_g1") == reference_rows(events)


async def test_catching_up_over_two_topics_meets_a_rollouts_events_in_one_batch(kafka_bootstrap, kafka_topics, pg_url):
    # The consumer hands out each partition in large chunks: unaligned, a rollout's enqueue (rollouts topic) and
    # its attempts (attempts topic) would mostly land in different batches, each loading and writing its rows.
    events = [e for i in range(100) for e in lifecycle(i)]
    for i in range(0, len(events), 40):  # a little apart in time, as a live system writes them
        await publish(kafka_bootstrap, kafka_topics, events[i : i + 40])
    w = worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False, batch_size=40)
    process, batches = w.process, list[set[str]]()

    async def record_batches(records: Any, stop: Any = None, *, decoded: Any = None) -> Any:
        batches.append({r.key.decode() for r in records})
        return await process(records, stop, decoded=decoded)

    w.process = record_batches  # type: ignore[method-assign]
    async with running(w):
        await wait_for_total(pg_url, "rollouts_g1", len(events))
    split = [key for key in {(e.key() or b"").decode() for e in events} if sum(key in b for b in batches) > 1]
    assert len(split) <= 20, f"{len(split)} of 100 rollouts spread over several batches"
    assert await stored_rows(pg_url, "rollouts_g1") == reference_rows(events)
