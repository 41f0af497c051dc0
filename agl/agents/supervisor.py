"""Runs the configured pools as ``agl runner`` child processes: restarts a crashed one with backoff, stops all.

Every start of an instance gets a fresh worker id (``<type>-<n>-<random>``): a restarted instance is a new worker,
so the watchdog fails over the attempts its predecessor held instead of them being confused with its new work.
A child that exits (crash, ``kill -9``, or exit 0 without being asked) is started again after a backoff that
doubles per quick exit (0.5 s up to 30 s) and resets once a child has lived ``HEALTHY_AFTER_S``. Stopping sends
SIGTERM to every child at once: each drains (its running attempts get the grace period) and deregisters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agl.agents.base import API_URL_ENV
from agl.stack._process import ManagedProcess

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from agl.agents.pools import Pool

log = logging.getLogger("agl.agents")
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.5, 30.0
#: A child that lived this long was healthy: its next crash starts the backoff over.
HEALTHY_AFTER_S = 60.0


@dataclass
class Instance:
    pool: Pool
    index: int
    process: ManagedProcess | None = None
    worker_id: str | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    restarts: int = 0
    not_before: float = 0.0
    exits: list[int | None] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.pool.agent_type}-{self.index}"


class PoolSupervisor:
    """``await run(stop)`` starts every instance, keeps them alive until ``stop`` is set, then stops them."""

    def __init__(
        self,
        pools: Sequence[Pool],
        *,
        api_url: str,
        logs: Path,
        env: Mapping[str, str],
        heartbeat_s: float = 2.0,
        drain_grace_s: float = 30.0,
        cwd: Path | None = None,
    ) -> None:
        self.api_url, self.logs, self.heartbeat_s, self.drain_grace_s = api_url, logs, heartbeat_s, drain_grace_s
        self.env = {**env, API_URL_ENV: api_url}
        self.cwd = cwd
        self.instances = [Instance(pool, i) for pool in pools for i in range(pool.instances)]

    def _argv(self, instance: Instance, worker_id: str) -> list[str]:
        pool = instance.pool
        return [
            sys.executable, "-m", "agl", "runner", "--agent", pool.agent_spec, "--api", self.api_url,
            "--worker-id", worker_id, "--slots", str(pool.slots), "--capabilities", ",".join(pool.capabilities()),
            "--heartbeat", str(self.heartbeat_s), "--drain-grace", str(self.drain_grace_s),
        ]  # fmt: skip

    def start(self, instance: Instance) -> None:
        worker_id = f"{instance.name}-{secrets.token_hex(3)}"
        proc = ManagedProcess(
            instance.name,
            self._argv(instance, worker_id),
            log_path=self.logs / f"{instance.name}.log",
            env=self.env,
            cwd=self.cwd,
            # The runner drains on SIGTERM: give it its grace and the deregistration before a kill.
            stop_timeout=self.drain_grace_s + 15,
        )
        proc.start()
        instance.process, instance.worker_id, instance.started_at = proc, worker_id, time.monotonic()
        log.info("started %s as worker %s (pid %s)", instance.name, worker_id, proc.pid)

    def _check(self, instance: Instance, now: float) -> None:
        proc = instance.process
        if proc is not None and proc.running():
            return
        if proc is not None:
            # It exited: note it and schedule the restart after the backoff.
            instance.exits.append(proc.returncode)
            lived = now - instance.started_at
            instance.quick_exits = 0 if lived >= HEALTHY_AFTER_S else instance.quick_exits + 1
            delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, instance.quick_exits - 1))
            instance.not_before, instance.process = now + delay, None
            log.warning(
                "%s (worker %s) exited with code %s; restarting in %.1f s",
                instance.name, instance.worker_id, proc.returncode, delay,
            )  # fmt: skip
            return
        if now >= instance.not_before:
            instance.restarts += 1
            self.start(instance)

    async def run(self, stop: asyncio.Event, poll_s: float = 0.25) -> None:
        for instance in self.instances:
            self.start(instance)
        try:
            while not stop.is_set():
                now = time.monotonic()
                for instance in self.instances:
                    self._check(instance, now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_s)
        finally:
            await self.stop()

    async def stop(self) -> None:
        running = [i.process for i in self.instances if i.process is not None]
        await asyncio.gather(*(p.stop_async() for p in running))
        for instance in self.instances:
            instance.process = None
