"""Reliability on the real broker and PostgreSQL: kill -9 mid-batch, a dropped connection, a rebalance.

After each ordeal the read model must equal the reference fold of the same events, with every record applied
exactly once (the ledger projection has no dedupe, so a duplicate or a loss would show).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from typing import Any

import pytest

from consumers.worker import ProjectionWorker
from tests.consumers import ledger
from tests.consumers.helpers import lifecycle, publish, retrying, running, stored_total, wait_for_total
from tests.consumers.reference import assert_ledger_exact, reference_rows, stored_rows

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

KILLS = 20


def some_events(n_rollouts: int) -> list[Any]:
    events = []
    for i in range(n_rollouts):
        events += retrying(i) if i % 5 == 0 else lifecycle(i, outcome="failed" if i % 3 == 0 else "succeeded")
    return events


def spawn_worker(kafka_bootstrap, pg_url, prefix, reference: str, log_path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, AGL_KAFKA_BOOTSTRAP=kafka_bootstrap, AGL_DATABASE_URL=pg_url, AGL_TOPIC_PREFIX=prefix)
    argv = [sys.executable, "-m", "agl", "projections", "run", reference, "--no-group", "--batch-size", "7"]
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=log)


async def test_repeated_kill_9_mid_batch_loses_and_duplicates_nothing(kafka_bootstrap, kafka_topics, pg_url, tmp_path):
    log = tmp_path / "worker.log"
    events = some_events(60)
    await publish(kafka_bootstrap, kafka_topics, events)
    rng = random.Random(7)
    progress = []
    for n in range(KILLS):
        proc = spawn_worker(kafka_bootstrap, pg_url, kafka_topics, "tests.consumers.ledger:PROJECTION", log)
        # Random moments after the worker got going (its start-up time depends on the machine's load): with
        # batches of 7 records, most land in the middle of a batch.
        while log.read_text().count("projection ledger running") <= n and proc.poll() is None:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        progress.append(await stored_total(pg_url, "ledger_g1"))
    assert progress[-1] > 0, (tmp_path / "worker.log").read_text()[-3000:]
    final_log = tmp_path / "final.log"
    proc = spawn_worker(kafka_bootstrap, pg_url, kafka_topics, "tests.consumers.ledger:PROJECTION", final_log)
    try:
        await wait_for_total(pg_url, "ledger_g1", len(events))
        while "projection ledger running" not in final_log.read_text():  # noqa: ASYNC110 - a child's log
            await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0  # SIGTERM drains the batch and exits cleanly
    await assert_ledger_exact(pg_url, "ledger_g1", len(events))
    assert await stored_rows(pg_url, "ledger_g1") == reference_rows(events)


async def test_a_connection_dropped_mid_transaction_is_retried(kafka_bootstrap, kafka_topics, pg_url):
    events = some_events(10)
    await publish(kafka_bootstrap, kafka_topics, events)
    worker = ProjectionWorker(
        ledger.DROPPING,
        bootstrap=kafka_bootstrap,
        database_url=pg_url,
        topic_prefix=kafka_topics,
        batch_size=5,
        use_group=False,
    )
    async with running(worker):
        await wait_for_total(pg_url, "dropping_g1", len(events))
    assert ledger._dropped["done"], "the connection was never dropped"
    await assert_ledger_exact(pg_url, "dropping_g1", len(events))
    assert await stored_rows(pg_url, "dropping_g1") == reference_rows(events)


async def test_a_rebalance_between_two_instances_applies_each_record_once(kafka_bootstrap, kafka_topics, pg_url):
    parts = [
        some_events(20),
        [e for i in range(20, 40) for e in lifecycle(i)],
        [e for i in range(40, 60) for e in lifecycle(i)],
    ]

    def instance() -> ProjectionWorker:
        return ProjectionWorker(
            ledger.PROJECTION, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics,
            batch_size=5, session_timeout_ms=6000, heartbeat_interval_ms=500,
        )  # fmt: skip

    async def assigned(worker: ProjectionWorker) -> None:
        assert worker.consumer is not None
        while not worker.consumer.assignment():  # noqa: ASYNC110 - polling another object's state
            await asyncio.sleep(0.1)

    await publish(kafka_bootstrap, kafka_topics, parts[0])
    async with running(instance()) as b:
        async with running(instance()) as a:
            await wait_for_total(pg_url, "ledger_g1", 10)
            await assigned(a)
            await assigned(b)
            # Both hold partitions now; the second batch of events is shared between them.
            await publish(kafka_bootstrap, kafka_topics, parts[1])
            await wait_for_total(pg_url, "ledger_g1", len(parts[0]) + len(parts[1]))
        # `a` left the group: its partitions move to `b` while more events arrive.
        await publish(kafka_bootstrap, kafka_topics, parts[2])
        await wait_for_total(pg_url, "ledger_g1", sum(map(len, parts)))
    assert a.applied_total > 0 and b.applied_total > 0, (a.applied_total, b.applied_total)
    events = [e for part in parts for e in part]
    await assert_ledger_exact(pg_url, "ledger_g1", len(events))
    assert await stored_rows(pg_url, "ledger_g1") == reference_rows(events)
