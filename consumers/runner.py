"""Run projection workers as a process (one, or several sharing it, each restarted on its own when it fails):
SIGTERM or SIGINT drain the batches in flight, then the process exits."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
from typing import TYPE_CHECKING

from consumers.worker import ProjectionWorker
from core.errors import ConfigError

log = logging.getLogger("agl.projections")

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from core.config import Settings
    from projections.base import Projection


def worker_for(projection: Projection, settings: Settings, **kwargs: object) -> ProjectionWorker:
    """A worker configured from ``settings`` (the stack's addresses and topic prefix)."""
    if not settings.kafka_bootstrap or not settings.database_url:
        raise ConfigError("projections need AGL_KAFKA_BOOTSTRAP and AGL_DATABASE_URL (`agl up` sets both)")
    return ProjectionWorker(
        projection,
        bootstrap=settings.kafka_bootstrap,
        database_url=settings.database_url,
        topic_prefix=settings.topic_prefix,
        **kwargs,  # type: ignore[arg-type]
    )


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def run_projection(
    projection: Projection, settings: Settings, *, batch_size: int = 2000, use_group: bool = True
) -> None:
    """Keep ``projection`` up to date until a signal asks to stop."""
    await run_projections([projection], settings, batch_size=batch_size, use_group=use_group)


#: A projection that fails in a shared process is started again after this delay, doubled at each failure in a
#: row up to :data:`RESTART_MAX_S`; one that ran :data:`HEALTHY_AFTER_S` before failing starts from it again.
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0


async def run_projections(
    projections: Sequence[Projection],
    settings: Settings,
    *,
    batch_size: int = 2000,
    use_group: bool = True,
    application_names: Mapping[str, str] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Keep ``projections`` up to date in this one process until stopped.

    Each keeps a worker of its own (its consumer group, its connection, its positions, its linger), exactly as
    if it ran alone; they share the interpreter and the event loop, so a small host has fewer processes competing
    for its cores (``agl up`` runs the read models nobody waits on to the millisecond this way).

    Alone, a worker's failure ends the process, and its supervisor restarts it. Together, a worker that fails is
    logged and started again on its own, with a backoff (:data:`RESTART_FIRST_S` doubling to
    :data:`RESTART_MAX_S`), while the others go on: one broken read model (a bug in its ``apply``, a newer version
    activated by another deployment) must not hold back the others, nor crash-loop a process the supervisor
    gives up on. Its lag, then its ``stalled`` flag, show in ``GET /v1/projections``.
    ``application_names``: by projection name, what its connections show PostgreSQL.
    ``stop``: set it to stop them (a caller in-process); without it, SIGTERM and SIGINT do.
    """
    if stop is None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
    names = application_names or {}

    def new_worker(projection: Projection) -> ProjectionWorker:
        return worker_for(
            projection, settings, batch_size=batch_size, use_group=use_group,
            application_name=names.get(projection.name),
        )  # fmt: skip

    if len(projections) == 1:
        async with new_worker(projections[0]) as worker:
            _announce(worker)
            await worker.run(stop)
        return
    async with asyncio.TaskGroup() as together:
        for projection in projections:
            together.create_task(_keep_running(functools.partial(new_worker, projection), stop))


def _announce(worker: ProjectionWorker) -> None:
    """One line for whoever supervises this process: from here on a SIGTERM drains and exits cleanly."""
    projection = worker.projection
    where = worker.generation.schema if worker.generation else f"(waiting for version {projection.version})"
    sys.stderr.write(f"projection {projection.name} running on {where}\n")
    sys.stderr.flush()


async def _keep_running(
    new_worker: Callable[[], ProjectionWorker],
    stop: asyncio.Event,
    *,
    first_s: float = RESTART_FIRST_S,
    max_s: float = RESTART_MAX_S,
    healthy_after_s: float = HEALTHY_AFTER_S,
) -> None:
    """Run a fresh worker from ``new_worker()`` until ``stop`` is set, starting another after each failure.

    A fresh worker starts from the positions stored with the rows, so what the failed one applied stays applied
    once, and what it had in flight is applied again from there (its transaction never committed).
    """
    loop = asyncio.get_running_loop()
    delay = first_s
    while not stop.is_set():
        started = loop.time()
        worker = new_worker()
        try:
            async with worker:
                _announce(worker)
                await worker.run(stop)
        except Exception:
            if loop.time() - started >= healthy_after_s:
                delay = first_s
            log.exception(
                "projection %s failed; the others in this process go on; starting it again in %.0f s",
                worker.projection.name, delay,
            )  # fmt: skip
        else:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, max_s)
