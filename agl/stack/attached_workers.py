"""The workers of attached projections, supervised by ``agl up`` beside the built-in ones.

The registry is a PostgreSQL table (``projections.attached``) that ``agl projections attach|detach`` write while
the stack runs, so the supervisor reads it every few seconds: it starts a worker for each new row, stops the
worker of a detached one (and acknowledges it, so ``detach --drop`` may drop the tables), and restarts one whose
revision changed (attached again, perhaps with new code). A user's projection that crash-loops is set aside with
a message instead of stopping the stack; attaching it again retries it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import psycopg

from projections.attached import AttachedProjection, list_attached, mark_stopped

if TYPE_CHECKING:
    from agl.stack._process import ManagedProcess
    from agl.stack.stack import Stack

log = logging.getLogger(__name__)

#: How often the running stack looks for projections attached or detached since.
POLL_S = 2.0


def service_name(projection: str) -> str:
    return f"projection-{projection}"


def worker_argv(entry: AttachedProjection) -> list[str]:
    argv = [sys.executable, "-m", "agl", "projections", "run", entry.reference]
    return [*argv, "--python-path", entry.python_path] if entry.python_path else argv


class AttachedWorkers:
    """Keeps one worker per attached projection running under ``stack``'s supervision."""

    def __init__(self, stack: Stack, poll_s: float = POLL_S) -> None:
        self.stack = stack
        self.poll_s = poll_s
        #: projection name -> revision of the worker running now
        self.running: dict[str, int] = {}
        #: projection name -> revision that crash-looped: not started again until attached again
        self.gave_up: dict[str, int] = {}
        self._next_poll = 0.0

    async def sync(self, *, force: bool = False) -> None:
        """Start, stop and restart workers to match the registry (at most once per ``poll_s`` unless forced)."""
        if not force and time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + self.poll_s
        assert self.stack.local_database_url is not None
        try:
            async with await psycopg.AsyncConnection.connect(
                self.stack.local_database_url, autocommit=True, connect_timeout=5
            ) as conn:
                entries = await list_attached(conn, include_detached=True)
                await self._apply(conn, entries)
        except psycopg.Error as e:
            # PostgreSQL itself is watched by the stack; a failed look is tried again at the next poll.
            log.warning("could not read the attached projections: %s", e)

    async def _apply(self, conn: psycopg.AsyncConnection[Any], entries: list[AttachedProjection]) -> None:
        wanted = {e.name: e for e in entries if e.attached}
        for name, revision in list(self.running.items()):
            entry = wanted.get(name)
            if entry is None or entry.revision != revision:
                await self.stack.stop_service(service_name(name))
                del self.running[name]
                _say(f"projection {name} {'detached' if entry is None else 'attached again'}: stopped its worker")
        for entry in entries:
            if not entry.attached and entry.stopped_at is None and entry.name not in self.running:
                await mark_stopped(conn, entry.name)
        for name, entry in wanted.items():
            if name in self.running or self.gave_up.get(name) == entry.revision:
                continue
            from agl.stack.stack import ServiceSpec  # the stack imports this module

            await self.stack.supervise(ServiceSpec(service_name(name), worker_argv(entry)))
            self.running[name] = entry.revision
            _say(f"projection {name} attached: started its worker ({entry.reference})")

    async def give_up(self, name: str, proc: ManagedProcess) -> bool:
        """Set aside the crash-looping service ``name`` if it is an attached projection's worker."""
        projection = next((p for p in self.running if service_name(p) == name), None)
        if projection is None:
            return False
        self.gave_up[projection] = self.running.pop(projection)
        await self.stack.stop_service(name)
        _say(
            f"projection {projection} crashed too often (last exit code {proc.returncode}; see {proc.log_path}); "
            f"it is no longer run. Fix it, then `agl projections attach` it again"
        )
        return True


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
