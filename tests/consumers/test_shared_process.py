"""Several projections in one process (`agl projections run a b`): each its own worker, rows, positions and
PostgreSQL application name; one that fails stops the others, and its error ends the process."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from agl.cli import main
from consumers.runner import _run_together, run_projections
from core.config import Settings
from projections.rollouts import PROJECTION as ROLLOUTS
from tests.consumers.helpers import fetch_all, lifecycle, publish, wait_for_total

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

#: A second read model over the same topics, under its own name: its own schema, group and positions.
TWIN = replace(ROLLOUTS, name="rollouts_twin")


async def test_projections_sharing_a_process_each_apply_everything_under_their_own_names(
    kafka_bootstrap, kafka_topics, pg_url
):
    events = [e for i in range(20) for e in lifecycle(i)]
    await publish(kafka_bootstrap, kafka_topics, events)
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    names = {"rollouts": "agl-test-shared-rollouts", "rollouts_twin": "agl-test-shared-twin"}
    stop = asyncio.Event()
    task = asyncio.create_task(run_projections([ROLLOUTS, TWIN], settings, application_names=names, stop=stop))
    try:
        await wait_for_total(pg_url, "rollouts_g1", len(events))
        await wait_for_total(pg_url, "rollouts_twin_g1", len(events))
        seen = await fetch_all(
            pg_url,
            "SELECT DISTINCT application_name FROM pg_stat_activity WHERE application_name LIKE 'agl-test-shared-%'",
        )
        assert {name for (name,) in seen} == set(names.values())
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)  # a stop drains both and returns
    for schema in ("rollouts_g1", "rollouts_twin_g1"):
        query = f"SELECT status, count(*) FROM {schema}.rollouts GROUP BY status"  # noqa: S608 - our names
        rows = await fetch_all(pg_url, query)
        assert rows == [("succeeded", 20)], schema


class _Worker:
    """What ``_run_together`` needs of a worker: ``run(stop)``."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.finished = False

    async def run(self, stop: asyncio.Event) -> None:
        if self.fails:
            await asyncio.sleep(0.05)
            raise RuntimeError("this projection broke")
        await stop.wait()  # as a worker's loop: until stopped, then its batch in flight ends
        self.finished = True


async def test_one_that_fails_stops_the_others_and_its_error_is_raised():
    healthy, broken = _Worker(fails=False), _Worker(fails=True)
    stop = asyncio.Event()
    with pytest.raises(RuntimeError, match="this projection broke"):
        await asyncio.wait_for(_run_together([healthy, broken], stop), 10)  # type: ignore[list-item]
    assert stop.is_set() and healthy.finished


def test_the_command_refuses_a_projection_named_twice_and_a_python_path_for_several(capsys):
    assert main(["projections", "run", "spans", "spans"]) == 2
    assert "named twice" in capsys.readouterr().err
    assert main(["projections", "run", "spans", "archive", "--python-path", "."]) == 2
    assert "give one name" in capsys.readouterr().err
