"""A rebuild that can be trusted: compared before the switch, no failed read during it, and a way back."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace

import psycopg
import pytest

from consumers.errors import ChecksumMismatch
from consumers.rebuild import Rebuild, rollback
from consumers.worker import ProjectionWorker
from projections.errors import RebuildConflict
from projections.reading import reading
from projections.rollouts import PROJECTION as ROLLOUTS
from projections.rollouts import apply as rollouts_apply
from projections.tracking import active_generation, building_generation
from tests.consumers.helpers import fetch_all, lifecycle, publish, running, wait_for_total

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


async def apply_losing_attempts(envelopes, conn) -> None:
    """The same version, a different result: what a non-deterministic apply (or a lost event) looks like."""
    await rollouts_apply(envelopes, conn)
    await conn.execute("DELETE FROM attempts")


TAMPERED = replace(ROLLOUTS, apply=apply_losing_attempts)


def live(kafka_bootstrap, pg_url, prefix) -> ProjectionWorker:
    return ProjectionWorker(
        ROLLOUTS, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False
    )


def rebuild(projection, kafka_bootstrap, pg_url, prefix, **kw) -> Rebuild:
    return Rebuild(projection, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, **kw)


async def test_a_rebuild_that_differs_from_the_live_generation_is_not_switched(
    kafka_bootstrap, kafka_topics, pg_url, pg_conn
):
    events = [e for i in range(20) for e in lifecycle(i)]
    await publish(kafka_bootstrap, kafka_topics, events)
    async with running(live(kafka_bootstrap, pg_url, kafka_topics)):
        await wait_for_total(pg_url, "rollouts_g1", len(events))
        # One batch holds the whole history, so only the attempts table differs.
        with pytest.raises(ChecksumMismatch, match=r"table attempts of rollouts_g2 differs from rollouts_g1"):
            await rebuild(TAMPERED, kafka_bootstrap, pg_url, kafka_topics, batch_size=5000).run(asyncio.Event())
    gen = await active_generation(pg_conn, "rollouts")
    assert gen is not None and gen.generation == 1  # readers stay where they were
    building = await building_generation(pg_conn, "rollouts")
    assert building is not None and building.generation == 2


async def test_readers_never_fail_while_a_rebuild_switches_and_drops(kafka_bootstrap, kafka_topics, pg_url, pg_conn):
    events = [e for i in range(40) for e in lifecycle(i)]
    await publish(kafka_bootstrap, kafka_topics, events)
    failures: list[BaseException] = []
    reads = 0
    done = asyncio.Event()

    async def reader() -> None:
        nonlocal reads
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            while not done.is_set():
                try:
                    async with reading(conn, ROLLOUTS):
                        # The schema is resolved first; the query comes later, possibly after the switch.
                        await asyncio.sleep(0.03)
                        await conn.execute("SELECT count(*) FROM rollouts JOIN attempts USING (rollout_id)")
                    reads += 1
                except Exception as e:  # noqa: BLE001 - any failure is what this test looks for
                    failures.append(e)

    async with running(live(kafka_bootstrap, pg_url, kafka_topics)):
        await wait_for_total(pg_url, "rollouts_g1", len(events))
        readers = [asyncio.create_task(reader()) for _ in range(4)]
        try:
            result = await rebuild(ROLLOUTS, kafka_bootstrap, pg_url, kafka_topics, batch_size=20).run(asyncio.Event())
            await asyncio.sleep(0.2)
        finally:
            done.set()
            await asyncio.gather(*readers)
    assert result.switched and [g.schema for g in result.dropped] == ["rollouts_g1"]
    assert not failures, failures[:3]
    assert reads > 10
    schemas = await fetch_all(pg_url, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'rollouts_g%' ORDER BY 1")
    assert schemas == [("rollouts_g2",)]


async def test_rollback_returns_readers_and_the_live_worker_to_the_kept_generation(
    kafka_bootstrap, kafka_topics, pg_url, pg_conn
):
    first = [e for i in range(10) for e in lifecycle(i)]
    await publish(kafka_bootstrap, kafka_topics, first)
    async with running(live(kafka_bootstrap, pg_url, kafka_topics)):
        await wait_for_total(pg_url, "rollouts_g1", len(first))
        result = await rebuild(ROLLOUTS, kafka_bootstrap, pg_url, kafka_topics, drop_old=False).run(asyncio.Event())
        assert result.switched and not result.dropped
        second = [e for i in range(10, 15) for e in lifecycle(i)]
        await publish(kafka_bootstrap, kafka_topics, second)
        await wait_for_total(pg_url, "rollouts_g2", len(first) + len(second))
        env = dict(os.environ, AGL_DATABASE_URL=pg_url, AGL_KAFKA_BOOTSTRAP=kafka_bootstrap)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agl", "projections", "rollback", "rollouts", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        assert "readers switched back to rollouts_g1" in out.decode()
        gen = await active_generation(pg_conn, "rollouts")
        assert gen is not None and gen.generation == 1
        # The live worker follows back and applies, from g1's own positions, what it had applied to g2 since.
        third = [e for i in range(15, 18) for e in lifecycle(i)]
        await publish(kafka_bootstrap, kafka_topics, third)
        await wait_for_total(pg_url, "rollouts_g1", len(first) + len(second) + len(third))
    rows = await fetch_all(pg_url, "SELECT count(*) FROM rollouts_g1.rollouts")
    assert rows == [(18,)]
    # Nothing earlier is kept now: a second rollback has nowhere to go.
    with pytest.raises(RebuildConflict, match="no earlier generation"):
        await rollback(pg_url, ROLLOUTS)
