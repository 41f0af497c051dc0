"""Several projections in one process (`agl projections run a b`): each its own worker, rows, positions and
PostgreSQL application name; one that fails is started again on its own while the others go on."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest

from agl.cli import main
from consumers.errors import ProjectionVersionMismatch
from consumers.runner import _keep_running, run_projections, worker_for
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


async def activate_a_newer_twin(settings: Settings) -> None:
    """Make the twin's active generation one built by a newer version of it than this code's."""
    stop = asyncio.Event()
    first = asyncio.create_task(run_projections([replace(TWIN, version=TWIN.version + 1)], settings, stop=stop))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(first, 30)


async def test_a_worker_whose_start_fails_closes_what_it_opened(kafka_bootstrap, kafka_topics, pg_url):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    await activate_a_newer_twin(settings)
    worker = worker_for(TWIN, settings)
    with pytest.raises(ProjectionVersionMismatch):
        await worker.start()
    # Restarted again and again in a shared process, a failed start must not leave a connection open each time.
    assert worker._conn is not None and worker._conn.closed


async def test_a_projection_that_fails_is_restarted_alone_while_the_others_apply_everything(
    kafka_bootstrap, kafka_topics, pg_url, caplog
):
    # The twin's active generation was built by a newer version: this (older) code must not write it, so its
    # worker fails as it starts, every time. The rollouts read model shares the process and must not care.
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    await activate_a_newer_twin(settings)

    events = [e for i in range(20) for e in lifecycle(i)]
    await publish(kafka_bootstrap, kafka_topics, events)
    stop = asyncio.Event()
    task = asyncio.create_task(run_projections([ROLLOUTS, TWIN], settings, stop=stop))
    try:
        await wait_for_total(pg_url, "rollouts_g1", len(events))
        while sum("projection rollouts_twin failed" in r.getMessage() for r in caplog.records) < 2:
            assert not task.done(), "the process ended"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)  # a stop ends the backoff at once and drains the healthy one
    failures = [r for r in caplog.records if "projection rollouts_twin failed" in r.getMessage()]
    assert failures[0].exc_info is not None and "version" in str(failures[0].exc_info[1])
    rows = await fetch_all(pg_url, "SELECT status, count(*) FROM rollouts_g1.rollouts GROUP BY status")
    assert rows == [("succeeded", 20)]


class _Worker:
    """What ``_keep_running`` needs of a worker: a projection's name, ``async with``, ``run(stop)``."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.projection = replace(ROLLOUTS, name="broken" if fails else "healthy")
        self.generation = None
        self.entered = self.exited = self.finished = False

    async def __aenter__(self) -> _Worker:
        self.entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.exited = True

    async def run(self, stop: asyncio.Event) -> None:
        if self.fails:
            raise RuntimeError("this projection broke")
        await stop.wait()  # as a worker's loop: until stopped, then its batch in flight ends
        self.finished = True


async def test_a_failing_worker_is_replaced_by_a_fresh_one_with_a_growing_delay_until_stopped(caplog):
    made: list[_Worker] = []
    started_at: list[float] = []
    loop = asyncio.get_running_loop()

    stop = asyncio.Event()
    fourth = asyncio.Event()

    def new_worker() -> _Worker:
        started_at.append(loop.time())
        made.append(_Worker(fails=len(made) < 3))  # three failures, then it holds
        if len(made) == 4:
            fourth.set()
        return made[-1]

    task = asyncio.create_task(_keep_running(new_worker, stop, first_s=0.05, max_s=0.2))  # type: ignore[arg-type]
    await asyncio.wait_for(fourth.wait(), 5)
    await asyncio.sleep(0.05)
    assert not task.done()  # the fourth runs
    stop.set()
    await asyncio.wait_for(task, 5)
    assert all(w.entered and w.exited for w in made) and made[-1].finished
    gaps = [b - a for a, b in itertools.pairwise(started_at)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and 0.2 <= gaps[2] < 1  # 0.05, then doubled, then capped
    assert [r.getMessage().rsplit(" in ", 1)[1] for r in caplog.records] == ["0 s", "0 s", "0 s"]


async def test_a_stop_during_the_delay_ends_it_at_once():
    stop = asyncio.Event()
    task = asyncio.create_task(_keep_running(lambda: _Worker(fails=True), stop, first_s=60))  # type: ignore[arg-type,return-value]
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 2)


def test_the_command_refuses_a_projection_named_twice_and_a_python_path_for_several(capsys):
    assert main(["projections", "run", "spans", "spans"]) == 2
    assert "named twice" in capsys.readouterr().err
    assert main(["projections", "run", "spans", "archive", "--python-path", "."]) == 2
    assert "give one name" in capsys.readouterr().err
