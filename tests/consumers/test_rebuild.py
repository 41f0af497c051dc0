"""Rebuild: the next generation is built from offset 0 beside the live one, compared, and switched to."""

from __future__ import annotations

import asyncio

import pytest

from consumers.rebuild import Rebuild, cancel_rebuild
from consumers.worker import ProjectionWorker
from projections.rollouts import PROJECTION as ROLLOUTS
from projections.tracking import Generation, active_generation, building_generation
from tests.consumers.helpers import fetch_all, lifecycle, publish, running, wait_for_total
from tests.consumers.reference import reference_rows, stored_rows

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


def number(gen: Generation | None) -> int | None:
    return None if gen is None else gen.generation


def rebuild(kafka_bootstrap, pg_url, prefix, **kw) -> Rebuild:
    return Rebuild(ROLLOUTS, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, **kw)


def live(kafka_bootstrap, pg_url, prefix) -> ProjectionWorker:
    return ProjectionWorker(
        ROLLOUTS, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False
    )


async def test_rebuild_switches_readers_to_an_equal_generation(kafka_bootstrap, kafka_topics, pg_url, pg_conn):
    first = [e for i in range(20) for e in lifecycle(i)]
    await publish(kafka_bootstrap, kafka_topics, first)
    async with running(live(kafka_bootstrap, pg_url, kafka_topics)):
        await wait_for_total(pg_url, "rollouts_g1", len(first))
        result = await rebuild(kafka_bootstrap, pg_url, kafka_topics, batch_size=10).run(asyncio.Event())
        assert result.switched and not result.resumed
        assert result.checksums and all(new == old for new, old in result.checksums.values()), result.checksums
        assert number(await active_generation(pg_conn, "rollouts")) == 2
        # The live worker follows the new generation: later events land there.
        more = [e for i in range(20, 25) for e in lifecycle(i)]
        await publish(kafka_bootstrap, kafka_topics, more)
        await wait_for_total(pg_url, "rollouts_g2", len(first) + len(more))
    assert await stored_rows(pg_url, "rollouts_g2") == reference_rows(first + more)
    schemas = await fetch_all(pg_url, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'rollouts_g%' ORDER BY 1")
    assert schemas == [("rollouts_g2",)]  # the replaced generation was dropped


async def test_a_stopped_rebuild_resumes_or_cancels_consistently(kafka_bootstrap, kafka_topics, pg_url, pg_conn):
    events = [e for i in range(30) for e in lifecycle(i)]
    await publish(kafka_bootstrap, kafka_topics, events)
    stop = asyncio.Event()
    stopped = await rebuild(kafka_bootstrap, pg_url, kafka_topics, batch_size=5, on_progress=lambda _: stop.set()).run(
        stop
    )
    assert not stopped.switched
    assert number(await building_generation(pg_conn, "rollouts")) == 1
    # Cancel drops it; a new rebuild starts over and completes (no live generation: target = high watermarks).
    assert number(await cancel_rebuild(pg_url, "rollouts")) == 1
    assert await building_generation(pg_conn, "rollouts") is None
    stop = asyncio.Event()
    again = rebuild(kafka_bootstrap, pg_url, kafka_topics, batch_size=5, on_progress=lambda _: stop.set())
    assert not (await again.run(stop)).switched
    resumed = await rebuild(kafka_bootstrap, pg_url, kafka_topics, batch_size=50).run(asyncio.Event())
    assert resumed.resumed and resumed.switched
    gen = await active_generation(pg_conn, "rollouts")
    assert gen is not None
    assert await stored_rows(pg_url, gen.schema) == reference_rows(events)
