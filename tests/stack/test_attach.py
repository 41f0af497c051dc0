"""Attaching a user's projection to a running `agl up`: it catches up with visible progress, is supervised
(restarted after a kill -9, listed, reported by status), and detaching stops it and keeps or drops its tables.

`agl up` runs on the session's broker and PostgreSQL (as an external cluster would be used), under this test's
topic prefix and database, so no second broker starts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from agl.stack._process import free_port
from agl.stack.state import read_state
from producers.publisher import EventPublisher
from tests.fixtures.events import T0, make_rollout_enqueued
from tests.stack.test_cli import READY, agl

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.pg]
REFERENCE = "examples.rollouts_per_hour:PROJECTION"
SERVICE = "projection-rollouts_per_hour"


class RunningStack:
    """`agl up` in the background, read until it says it is ready."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.data_dir = Path(env["AGL_DATA_DIR"])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agl", "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        self.output: list[str] = []
        for line in self.proc.stdout:
            self.output.append(line)
            if READY in line:
                break
        assert any(READY in line for line in self.output), "".join(self.output)

    def stop(self) -> str:
        """Interrupt it; everything it printed."""
        self.proc.send_signal(signal.SIGINT)
        rest, _ = self.proc.communicate(timeout=120)
        output = "".join(self.output) + rest
        assert self.proc.returncode == 0, output
        return output


@pytest.fixture
def stack_env(  # noqa: PLR0917 - pytest passes fixtures as parameters
    tmp_path, kafka_bootstrap, kafka_topics, pg_url, llm_endpoint, llm_model
) -> dict[str, str]:
    """Settings for `agl up` on the session's services, and for the CLI commands that talk to it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGL_")}
    env.update(
        AGL_DATA_DIR=str(tmp_path / "d"),
        AGL_KAFKA_BOOTSTRAP=kafka_bootstrap,
        AGL_DATABASE_URL=pg_url,
        AGL_TOPIC_PREFIX=kafka_topics,
        AGL_API_PORT=str(free_port()),
        AGL_LLM_ENDPOINT=llm_endpoint,
        AGL_LLM_MODEL=llm_model,
    )
    return env


@pytest.fixture
def start_stack(stack_env) -> Iterator[Callable[[], RunningStack]]:
    """Starts `agl up`; whatever a failed test left running is killed (its children die with it)."""
    started: list[RunningStack] = []

    def start() -> RunningStack:
        started.append(RunningStack(stack_env))
        return started[-1]

    yield start
    for stack in started:
        if stack.proc.poll() is None:
            stack.proc.kill()
            stack.proc.communicate()


def enqueued(count: int, start: int) -> list[Any]:
    """Rollouts over several hours and every mode (and none)."""
    modes = ("train", "val", "test", None)
    return [
        make_rollout_enqueued(occurred_at=T0 + timedelta(minutes=7 * i), mode=modes[i % 4])
        for i in range(start, start + count)
    ]


def expected(events: list[Any]) -> Counter[tuple[Any, str]]:
    counts: Counter[tuple[Any, str]] = Counter()
    for e in events:
        counts[(e.occurred_at.replace(minute=0, second=0, microsecond=0), e.mode or "none")] += 1
    return counts


async def publish(bootstrap: str, prefix: str, events: list[Any]) -> None:
    async with EventPublisher(bootstrap, topic_prefix=prefix) as publisher:
        await publisher.publish_many(events)


def read_model(url: str) -> Counter[tuple[Any, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT hour, mode, rollouts FROM rollouts_per_hour_g1.rollouts_per_hour").fetchall()
    return Counter({(hour, mode): n for hour, mode, n in rows})


def eventually(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def worker_pid(data_dir: Path, service: str = SERVICE) -> int | None:
    state = read_state(data_dir)
    return None if state is None else state.components.get(service)


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_attach_catch_up_supervise_detach_and_drop(start_stack, stack_env, kafka_bootstrap, kafka_topics, pg_url):
    stack = start_stack()
    env, data_dir = stack_env, stack.data_dir
    history = enqueued(3000, 0)
    await publish(kafka_bootstrap, kafka_topics, history)

    attached = agl(env, "projections", "attach", REFERENCE, timeout=90)
    assert attached.returncode == 0, attached.stdout + attached.stderr
    out = attached.stdout
    assert "attached rollouts_per_hour (examples.rollouts_per_hour:PROJECTION, revision 1)" in out, out
    progress = [line for line in out.splitlines() if line.startswith("rollouts_per_hour: position ")]
    assert progress, out
    assert "watermark" in progress[-1] and "events/s" in progress[-1] and "ETA" in progress[-1], out
    assert "position 3000 / watermark 3000 (100.0%)" in progress[-1], out
    assert "rollouts_per_hour caught up in" in out, out
    assert read_model(pg_url) == expected(history), "caught up: every rollout counted once"

    listed = agl(env, "projections", "list")
    assert listed.returncode == 0, listed.stderr
    kinds = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines() if not line.startswith(" ")}
    assert kinds["rollouts"] == "built" and kinds["rollouts_per_hour"] == "attached", listed.stdout
    status = agl(env, "projections", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "rollouts_per_hour v1 g1 (active, attached) caught up: lag 0 events" in status.stdout, status.stdout

    # Supervised like a built-in worker: killed, it is restarted, and resumes from its stored positions.
    pid = eventually(lambda: worker_pid(data_dir), "the state file lists the worker")
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: worker_pid(data_dir) not in (None, pid), "the supervisor restarted the worker")
    more = enqueued(200, 3000)
    await publish(kafka_bootstrap, kafka_topics, more)
    eventually(lambda: read_model(pg_url) == expected(history + more), "the restarted worker counted the new rollouts")

    # Detach: the running stack stops the worker within seconds; the tables stay, frozen.
    pid = worker_pid(data_dir)
    assert pid is not None
    detached = agl(env, "projections", "detach", "rollouts_per_hour")
    assert detached.returncode == 0, detached.stderr
    assert "its tables (rollouts_per_hour_g1) and positions are kept" in detached.stdout, detached.stdout
    eventually(lambda: worker_pid(data_dir) is None and gone(pid), "the worker stopped")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        eventually(
            lambda: conn.execute("SELECT stopped_at IS NOT NULL FROM attached_projections").fetchone() == (True,),
            "the supervisor acknowledged the stop",
        )
    await publish(kafka_bootstrap, kafka_topics, enqueued(10, 3200))
    status = agl(env, "projections", "status")
    assert status.returncode == 0, "a detached projection falling behind is no stall"
    assert "rollouts_per_hour detached at" in status.stdout and "tables kept" in status.stdout, status.stdout
    assert "rollouts_per_hour v1" not in status.stdout, status.stdout
    assert read_model(pg_url) == expected(history + more), "nothing is applied after the detach"

    refused = agl(env, "projections", "detach", "rollouts_per_hour", "--drop")
    assert refused.returncode == 2 and "add --yes" in refused.stderr, refused.stderr
    assert read_model(pg_url) == expected(history + more)
    dropped = agl(env, "projections", "detach", "rollouts_per_hour", "--drop", "--yes")
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped rollouts_per_hour_g1" in dropped.stdout, dropped.stdout
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regnamespace('rollouts_per_hour_g1')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM attached_projections").fetchone() == (0,)
    output = stack.stop()
    assert "projection rollouts_per_hour attached: started its worker" in output, output
    assert "projection rollouts_per_hour detached: stopped its worker" in output, output


USER_MODULE = """
from projections.base import Projection
from projections.migrations import Migration
from schemas import RolloutEnqueued
from schemas.topics import ROLLOUTS


async def apply(envelopes, conn):
    await conn.execute("UPDATE seen SET n = n + %s", (len(envelopes),))


PROJECTION = Projection(
    name="seen_rollouts",
    version=1,
    topics=(ROLLOUTS,),
    event_types=frozenset({RolloutEnqueued}),
    migrations=(Migration(1, "tables", "CREATE TABLE seen (n bigint NOT NULL); INSERT INTO seen VALUES (0)"),),
    apply=apply,
)
"""


def seen(url: str) -> int:
    """The count, or -1 before the worker has created its tables."""
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute("SELECT n FROM seen_rollouts_g1.seen").fetchone()
        except psycopg.errors.UndefinedTable:
            return -1
    return -1 if row is None else int(row[0])


async def test_a_crash_looping_projection_is_set_aside_and_attached_ones_start_with_the_stack(  # noqa: PLR0917
    tmp_path, start_stack, stack_env, kafka_bootstrap, kafka_topics, pg_url
):
    # A module beside the user's shell, importable only from there: the worker finds it through the stored path.
    code = tmp_path / "user_code"
    code.mkdir()
    (code / "seen_rollouts.py").write_text(USER_MODULE)
    service = "projection-seen_rollouts"

    def attach() -> None:
        done = subprocess.run(
            [sys.executable, "-m", "agl", "projections", "attach", "seen_rollouts:PROJECTION", "--no-wait"],
            env=stack_env, cwd=code, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr

    stack = start_stack()
    await publish(kafka_bootstrap, kafka_topics, enqueued(50, 0))
    attach()
    eventually(lambda: seen(pg_url) == 50, "the attached worker counted every rollout")

    # The code goes away: the worker crash-loops on its import, is set aside, and the stack stays up.
    (code / "seen_rollouts.py").unlink()
    pid = worker_pid(stack.data_dir, service)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: worker_pid(stack.data_dir, service) is None, "the supervisor gave up on it", timeout=45)
    await asyncio.sleep(3)  # a poll of the registry later, it is still not started again
    assert worker_pid(stack.data_dir, service) is None and stack.proc.poll() is None
    assert agl(stack_env, "status").returncode == 0

    # Fixed and attached again: the new revision runs, from where the first one stood.
    (code / "seen_rollouts.py").write_text(USER_MODULE)
    attach()
    await publish(kafka_bootstrap, kafka_topics, enqueued(5, 50))
    eventually(lambda: seen(pg_url) == 55, "the worker of the new revision counted the new rollouts")
    output = stack.stop()
    assert "projection seen_rollouts crashed too often" in output, output

    # A stack started later runs the attached projection from its start.
    stack = start_stack()
    assert worker_pid(stack.data_dir, service) is not None
    stack.stop()
