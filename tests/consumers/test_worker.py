"""The consumer loop against a real broker and PostgreSQL: positions, redelivery, re-publication."""

from __future__ import annotations

import pytest

from consumers.worker import ProjectionWorker
from projections.rollouts import PROJECTION as ROLLOUTS
from tests.consumers.helpers import fetch_all, lifecycle, publish, running, wait_for_total

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


async def test_a_republished_event_has_no_effect(kafka_bootstrap, kafka_topics, pg_url):
    first = lifecycle(1)
    await publish(kafka_bootstrap, kafka_topics, first)
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False)):
        await wait_for_total(pg_url, "rollouts_g1", 4)
        # The same events again (same event ids, new offsets), e.g. a producer retry after a lost ack.
        await publish(kafka_bootstrap, kafka_topics, first)
        await wait_for_total(pg_url, "rollouts_g1", 8)
    rows = await fetch_all(pg_url, "SELECT count(*) FROM rollouts_g1.applied_events")
    assert rows == [(4,)]
    assert await fetch_all(pg_url, "SELECT rollout_id, status FROM rollouts_g1.rollouts") == [("ro-00001", "succeeded")]


async def test_a_restarted_worker_resumes_from_stored_positions(kafka_bootstrap, kafka_topics, pg_url):
    await publish(kafka_bootstrap, kafka_topics, lifecycle(1))
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False)):
        await wait_for_total(pg_url, "rollouts_g1", 4)
    await publish(kafka_bootstrap, kafka_topics, lifecycle(2))
    second = worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False)
    async with running(second):
        await wait_for_total(pg_url, "rollouts_g1", 8)
    # The second worker started at the stored positions: it saw only the new rollout's four events.
    assert (second.applied_total, second.redelivered_total) == (4, 0)
    assert await fetch_all(pg_url, "SELECT count(*) FROM rollouts_g1.rollouts") == [(2,)]


async def test_copies_of_an_event_within_one_batch_apply_once(kafka_bootstrap, kafka_topics, pg_url):
    first = lifecycle(1)
    # Both copies are on the broker before the worker starts, so they arrive in the same batch.
    await publish(kafka_bootstrap, kafka_topics, first + first)
    w = worker(kafka_bootstrap, pg_url, kafka_topics, use_group=False)
    async with running(w):
        await wait_for_total(pg_url, "rollouts_g1", 8)
    assert (w.applied_total, w.redelivered_total) == (4, 0)
    assert await fetch_all(pg_url, "SELECT count(*) FROM rollouts_g1.applied_events") == [(4,)]
    assert await fetch_all(pg_url, "SELECT rollout_id, status, attempt_count FROM rollouts_g1.rollouts") == [
        ("ro-00001", "succeeded", 1)
    ]
