"""A worker writes only a generation built by its own version of the projection, in both directions of skew."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from consumers.rebuild import Rebuild, rollback
from consumers.worker import ProjectionWorker
from projections.errors import RebuildConflict
from projections.rollouts import PROJECTION as ROLLOUTS
from projections.tracking import active_generation
from tests.consumers.helpers import lifecycle, publish, running, stored_total, wait_for_total
from tests.consumers.versions import NEXT

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


def worker(projection, kafka_bootstrap, pg_url, prefix, **kw) -> ProjectionWorker:
    return ProjectionWorker(
        projection, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False, **kw
    )


def rebuild_next(kafka_bootstrap, pg_url, prefix) -> Rebuild:
    return Rebuild(NEXT, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, batch_size=50)


async def test_an_old_worker_stops_when_a_newer_version_is_switched_in(kafka_bootstrap, kafka_topics, pg_url, tmp_path):
    first = [e for i in range(10) for e in lifecycle(i)]
    await publish(kafka_bootstrap, kafka_topics, first)
    env = dict(os.environ, AGL_KAFKA_BOOTSTRAP=kafka_bootstrap, AGL_DATABASE_URL=pg_url, AGL_TOPIC_PREFIX=kafka_topics)
    log = tmp_path / "v1.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(  # the current code, as `agl up` runs it
            sys.executable, "-m", "agl", "projections", "run", "rollouts", "--no-group", env=env, stdout=out, stderr=out
        )
    try:
        await wait_for_total(pg_url, "rollouts_g1", len(first))
        result = await rebuild_next(kafka_bootstrap, pg_url, kafka_topics).run(asyncio.Event())
        assert result.switched and result.generation.schema == "rollouts_g2"
        switched_at = await stored_total(pg_url, "rollouts_g2")
        await publish(kafka_bootstrap, kafka_topics, [e for i in range(10, 15) for e in lifecycle(i)])
        code = await asyncio.wait_for(proc.wait(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.read_text()
    assert code != 0, text[-2000:]
    assert f"rollouts_g2 is active and was built by version {NEXT.version}" in text, text
    assert f"this code is version {ROLLOUTS.version}" in text, text
    # The old worker never wrote into the new version's tables.
    assert await stored_total(pg_url, "rollouts_g2") == switched_at


async def test_a_new_worker_waits_for_a_generation_of_its_version(kafka_bootstrap, kafka_topics, pg_url, pg_conn):
    first = [e for i in range(10) for e in lifecycle(i)]
    await publish(kafka_bootstrap, kafka_topics, first)
    async with running(worker(ROLLOUTS, kafka_bootstrap, pg_url, kafka_topics)):
        await wait_for_total(pg_url, "rollouts_g1", len(first))
    more = [e for i in range(10, 15) for e in lifecycle(i)]
    new = worker(NEXT, kafka_bootstrap, pg_url, kafka_topics, version_poll_s=0.1)
    async with running(new):
        await publish(kafka_bootstrap, kafka_topics, more)
        await asyncio.sleep(3)
        # Deployed before the rebuild, it writes nothing: not the older tables, not a generation of its own.
        assert new.generation is None and new.applied_total == 0
        assert await stored_total(pg_url, "rollouts_g1") == len(first)
        gen = await active_generation(pg_conn, "rollouts")
        assert gen is not None and (gen.generation, gen.version) == (1, ROLLOUTS.version)
        # Rolling back to the older version is for that version's code only.
        with pytest.raises(RebuildConflict, match="no earlier generation"):
            await rollback(pg_url, NEXT)
        result = await rebuild_next(kafka_bootstrap, pg_url, kafka_topics).run(asyncio.Event())
        assert result.switched
        # Once its version is active, the waiting worker takes it and goes on from its positions.
        await wait_for_total(pg_url, "rollouts_g2", len(first) + len(more))
    assert new.applied_total > 0
