"""A report that waits for the rollout's lock behind another decision decides on what that decision left.

The agents' flaky test (tests/agents/test_pools.py) read a rollout ``succeeded`` whose only attempt read ``running``:
a heartbeat queued behind the finish had read the rollout after the finish but the attempt from before it,
recorded a late heartbeat saying ``running`` and wrote that status back. Here the finish holds the lock open while
the heartbeat queues behind it, as a runner's heartbeat loop does when it beats during the finish.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from producers import lifecycle
from producers.publisher import EventPublisher
from tests.producers.test_lifecycle_api import dequeue, enqueue, report

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

ENVELOPE = {"source": "/agl/tests"}


async def _waits_for_a_lock(watcher: psycopg.AsyncConnection, pid: int) -> None:
    for _ in range(200):
        cur = await watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = await cur.fetchone()
        if row is not None and row[0] == "Lock":
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the heartbeat never waited for the rollout's lock")


async def test_a_heartbeat_queued_behind_the_finish_sees_the_attempt_ended(api, app, pg_url):
    await enqueue(api, {"rollout_id": "ro-1", "input": 1})
    (claim,) = await dequeue(api, "w1")
    await report(api, claim, "running")
    ids = {"rollout_id": "ro-1", "attempt_id": claim["attempt_id"], "worker_id": "w1", "envelope": ENVELOPE}
    publisher: EventPublisher = app.state.publisher
    async with (
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as finishing,
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as beating,
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as watcher,
    ):
        async with finishing.transaction():  # the finish's decision, its commit held back
            await lifecycle.report(finishing, publisher, **ids, kind="finish", status="succeeded")
            beat = asyncio.create_task(lifecycle.report(beating, publisher, **ids, kind="heartbeat"))
            await _waits_for_a_lock(watcher, beating.info.backend_pid)
        outcome = await beat
        cur = await watcher.execute(
            "SELECT status FROM lifecycle_attempts WHERE attempt_id = %s", (claim["attempt_id"],)
        )
        stored = await cur.fetchone()

    # Nothing is late about a heartbeat racing its own attempt's finish, and the attempt stays succeeded.
    assert outcome.verdict is not None
    assert (outcome.verdict.rollout_status, outcome.verdict.attempt_status) == ("succeeded", "succeeded")
    assert not outcome.verdict.late and outcome.outbox_ids == []
    assert stored == ("succeeded",)
    again = await report(api, claim, "heartbeat")
    assert (again["rollout_status"], again["attempt_status"]) == ("succeeded", "succeeded")
