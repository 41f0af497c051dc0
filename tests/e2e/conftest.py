"""A live service set for end-to-end tests: the API, the watchdog and the rollouts projection as real processes
(``agl api``, ``agl watchdog``, ``agl projections run rollouts``) on the session's broker and this test's database,
and helpers to start runners (``agl runner``) as processes that can be killed with -9."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from agl.stack._process import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class LiveServices:
    env: dict[str, str]
    logs: Path
    api_url: str
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    def start(self, name: str, *argv: str) -> ManagedProcess:
        proc = ManagedProcess(
            name,
            [sys.executable, "-m", "agl", *argv],
            log_path=self.logs / f"{name}.log",
            env=self.env,
            cwd=REPO,
            stop_timeout=15,
        )
        proc.start()
        self.processes[name] = proc
        return proc

    def kill9(self, name: str) -> None:
        proc = self.processes[name]
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.stop()  # reaps it

    def runner(self, name: str, agent: str, *extra: str) -> ManagedProcess:
        return self.start(name, "runner", "--agent", agent, "--api", self.api_url, "--worker-id", name, *extra)

    def logs_tail(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_tail(15)}" for n, p in self.processes.items())

    def stop_all(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop()


async def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the API at {url} did not come up")
            await asyncio.sleep(0.2)


@pytest.fixture
def e2e_logs(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


@contextlib.asynccontextmanager
async def live_services(bootstrap: str, prefix: str, pg_url: str, logs: Path) -> AsyncIterator[LiveServices]:
    """The API, the watchdog and the rollouts and resources projections as processes on these services."""
    port = free_port()
    env = {
        **os.environ,
        "AGL_KAFKA_BOOTSTRAP": bootstrap,
        "AGL_DATABASE_URL": pg_url,
        "AGL_TOPIC_PREFIX": prefix,
        "AGL_API_HOST": "127.0.0.1",
        "AGL_API_PORT": str(port),
        "PYTHONPATH": str(REPO),
    }
    services = LiveServices(env, logs, f"http://127.0.0.1:{port}")
    services.start("api", "api")
    services.start("watchdog", "watchdog", "--interval", "0.2")
    services.start("projection-rollouts", "projections", "run", "rollouts")
    services.start("projection-resources", "projections", "run", "resources")  # runners read resources
    try:
        await wait_ready(services.api_url)
        yield services
    except BaseException:
        print(services.logs_tail())
        raise
    finally:
        services.stop_all()


@pytest_asyncio.fixture(loop_scope="session")
async def live(kafka_bootstrap: str, kafka_topics: str, pg_url: str, e2e_logs: Path) -> AsyncIterator[LiveServices]:
    async with live_services(kafka_bootstrap, kafka_topics, pg_url, e2e_logs) as services:
        yield services
