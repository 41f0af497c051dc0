"""`agl up` / `status` / `down` as a user runs them: real processes, real ports, a temporary data directory."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import psutil
import psycopg
import pytest

from agl.config import KAFKA_VERSION
from agl.stack._process import free_ports
from agl.stack.projection_processes import PROJECTION_WORKERS, projection_processes
from agl.stack.smoke import kafka_round_trip
from agl.stack.state import read_state
from tests.fixtures.services import KAFKA_LIBS_CACHE

pytestmark = pytest.mark.slow
READY = "Ctrl-C or `agl down`"


def stack_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGL_")}
    kafka, controller, postgres, api = free_ports(4)
    env.update(
        AGL_DATA_DIR=str(data_dir),
        AGL_KAFKA_PORT=str(kafka),
        AGL_KAFKA_CONTROLLER_PORT=str(controller),
        AGL_POSTGRES_PORT=str(postgres),
        AGL_API_PORT=str(api),
        AGL_KAFKA_LIBS_DIR=str(KAFKA_LIBS_CACHE / f"kafka-{KAFKA_VERSION}"),
        **extra,
    )
    return env


def agl(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agl", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class Up:
    """`agl up` in the background, read until it says it is ready.

    Every one started is stopped after its test (tests/stack/conftest.py), also when the test failed half way: a
    stack left running would hold its broker, database and ports for the rest of the run.
    """

    started: ClassVar[list[Up]] = []

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agl", "up", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        Up.started.append(self)
        self.output: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 180
        for line in self.proc.stdout:
            self.output.append(line)
            if READY in line or time.monotonic() > deadline:
                break
        assert any(READY in line for line in self.output), "".join(self.output)

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        rest, _ = self.proc.communicate(timeout=120)
        return self.proc.returncode, "".join(self.output) + rest

    def stop(self) -> None:
        """Stop it if it still runs (as Ctrl-C does; killed if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        elif self.proc.stdout is not None:
            self.proc.stdout.close()


def child_pids(data_dir: Path) -> list[int]:
    state = read_state(data_dir)
    assert state is not None
    return list(state.components.values())


def assert_services_use_the_socket(data_dir: Path) -> None:
    """The stack's services reach its PostgreSQL over the Unix-domain socket, each under its own application name;
    the address the stack shows stays TCP."""
    state = read_state(data_dir)
    assert state is not None and "@127.0.0.1:" in state.database_url
    with psycopg.connect(state.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, client_addr FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND datname = 'agl' AND pid <> pg_backend_pid()"
        ).fetchall()
    assert len(rows) >= len(PROJECTION_WORKERS), rows
    assert all(client_addr is None for _, client_addr in rows), f"connected over TCP: {rows}"
    # Each service names its connections as the same command run by hand would: pg_stat_activity tells them apart.
    names = {name for name, _ in rows}
    expected = {"agl-api", "agl-watchdog", *(f"agl-projections-run-{n}" for n in PROJECTION_WORKERS)}
    assert expected <= names, f"missing: {sorted(expected - names)}; seen: {sorted(names)}"
    assert all(name.startswith("agl-") for name in names), sorted(names)


def assert_all_gone(pids: list[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    assert not alive, f"processes left behind: {alive}"


def test_up_status_twin_and_sigint_leave_nothing_behind(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="tansu")
    up = Up(env)
    pids = child_pids(tmp_path / "d")
    # The rollouts projection runs alone; the others share one process (AGL_PROJECTION_PROCESSES=shared).
    assert len(projection_processes("shared")) == 2
    assert len(pids) == 6 + 2, (
        "broker, postgres, llm, api, watchdog, knowledge indexer and the two projection processes"
    )
    status = agl(env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    for component in ("broker", "postgres", "api", "llm", "projection"):
        assert any(line.startswith(component) and " up " in line for line in status.stdout.splitlines()), status.stdout
    assert "rollouts g1 (active): lag 0 events" in status.stdout, status.stdout
    assert_services_use_the_socket(tmp_path / "d")
    # A second terminal needs no settings: the CLI finds the running stack on the data directory.
    projections = agl(env, "projections", "status")
    assert projections.returncode == 0 and "rollouts v2 g1 (active)" in projections.stdout, projections.stderr
    twin = agl(env, "up")
    assert twin.returncode == 0
    assert "already runs" in twin.stdout
    smoke = agl(env, "smoke")
    assert smoke.returncode == 0 and "smoke: ok" in smoke.stdout, smoke.stdout + smoke.stderr
    code, output = up.interrupt()
    assert code == 0, output
    assert "Tansu keeps its whole history in memory" in output
    assert_all_gone([up.proc.pid, *pids])
    after = agl(env, "status")
    assert after.returncode == 1 and "down" in after.stdout


def test_kill_9_of_the_supervisor_takes_its_children_along(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="tansu")
    up = Up(env)
    pids = child_pids(tmp_path / "d")
    up.proc.kill()
    up.proc.communicate()
    assert_all_gone(pids)
    # The lock died with the supervisor: a new stack starts on the same data directory.
    again = Up(env)
    code, _ = again.interrupt()
    assert code == 0


def test_down_stops_a_running_stack(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="tansu")
    up = Up(env)
    pids = child_pids(tmp_path / "d")
    down = agl(env, "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    up.proc.communicate(timeout=60)
    assert up.proc.returncode == 0
    assert_all_gone(pids)


def test_apache_kafka_keeps_topics_and_records_across_a_restart(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="kafka")
    bootstrap = f"127.0.0.1:{env['AGL_KAFKA_PORT']}"
    up = Up(env)
    marker_topic = "agl.smoke.v1"
    asyncio.run(kafka_round_trip(bootstrap, marker_topic))
    state = read_state(tmp_path / "d")
    assert state is not None and state.durable_log
    assert up.interrupt()[0] == 0
    up = Up(env)
    records = asyncio.run(_count_records(bootstrap, marker_topic))
    assert records == 1, "the record written before the restart is still there"
    assert up.interrupt()[0] == 0


async def _count_records(bootstrap: str, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        batch = await consumer.getmany(tp, timeout_ms=10_000)
        return len(batch.get(tp, []))
    finally:
        await consumer.stop()


def test_tansu_restart_is_detected_and_refused_while_positions_exist(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="tansu")
    up = Up(env)
    url = f"postgresql://postgres@127.0.0.1:{env['AGL_POSTGRES_PORT']}/agl"
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        generation = "SELECT count(*) FROM projection_generations WHERE projection = 'rollouts'"
        while conn.execute(generation).fetchone() != (1,):
            assert time.monotonic() < deadline, "the rollouts worker did not create its generation"
            time.sleep(0.2)
        # The rollouts projection had applied 7 records of partition 0, which a restarted Tansu no longer has.
        conn.execute(
            "INSERT INTO projection_offsets (projection, topic, partition, next_offset) "
            "VALUES ('rollouts_g1', 'agl.rollouts.v1', 0, 7) ON CONFLICT (projection, topic, partition)"
            " DO UPDATE SET next_offset = 7"
        )
    assert up.interrupt()[0] == 0
    refused = agl(env, "up")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "log was reset" in refused.stderr and "--accept-log-reset" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 2  # the one-line error after the Tansu warning
    accepted = Up(env, "--accept-log-reset")
    with psycopg.connect(url) as conn:
        # The projection that had applied lost records started over; the archive is kept (never deleted).
        stale = "SELECT count(*) FROM projection_offsets WHERE topic = 'agl.rollouts.v1' AND next_offset = 7"
        assert conn.execute(stale).fetchone() == (0,), "".join(accepted.output)
        archives = "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'archive_g%'"
        found = conn.execute(archives).fetchone()
        assert found is not None and found[0] >= 1
    assert accepted.interrupt()[0] == 0


def test_port_in_use_is_one_clear_line(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="tansu")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["AGL_API_PORT"])))
        squatter.listen()
        result = agl(env, "up")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1] == (
        f"agl up: port {env['AGL_API_PORT']} (api) on 127.0.0.1 is already in use; free it or set AGL_API_PORT"
    )


def test_unusable_data_dir_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = agl(stack_env(blocker / "d", AGL_BROKER="tansu"), "up")
    assert result.returncode == 3
    assert result.stderr.startswith(f"agl up: data directory {blocker / 'd'} is not usable")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_broker_that_does_not_come_up_in_time_is_reported(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="tansu", AGL_STARTUP_TIMEOUT_S="0.001")
    result = agl(env, "up")
    assert result.returncode == 3, result.stderr
    assert "did not" in result.stderr and "within" in result.stderr
    assert not (tmp_path / "d" / "stack.json").exists()


def test_bad_settings_and_contradictory_flags_exit_2_with_one_line(tmp_path):
    env = stack_env(tmp_path / "d")
    bad = agl({**env, "AGL_KAFKA_PORT": "abc"}, "status")
    assert bad.returncode == 2
    assert bad.stderr.startswith("agl status: invalid setting AGL_KAFKA_PORT:")
    assert len(bad.stderr.strip().splitlines()) == 1
    external = agl(env, "up", "--broker", "external")
    assert external.returncode == 2
    assert external.stderr.strip() == "agl up: --broker external needs AGL_KAFKA_BOOTSTRAP=host:port"
