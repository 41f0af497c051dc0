"""Run projection workers as a process (one, or several sharing it): SIGTERM or SIGINT drain the batches in
flight, then the process exits."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING

from consumers.worker import ProjectionWorker
from core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

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
    for its cores (``agl up`` runs the read models nobody waits on to the millisecond this way). A worker
    that fails stops the others (each finishes its batch in flight), and the error ends the process, which its
    supervisor restarts. ``application_names``: by projection name, what its connections show PostgreSQL.
    ``stop``: set it to stop them (a caller in-process); without it, SIGTERM and SIGINT do.
    """
    if stop is None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
    names = application_names or {}
    async with contextlib.AsyncExitStack() as exits:
        workers = []
        for projection in projections:
            worker = worker_for(
                projection, settings, batch_size=batch_size, use_group=use_group,
                application_name=names.get(projection.name),
            )  # fmt: skip
            workers.append(await exits.enter_async_context(worker))
            # One line each for whoever supervises this process: from here on a SIGTERM drains and exits cleanly.
            where = worker.generation.schema if worker.generation else f"(waiting for version {projection.version})"
            sys.stderr.write(f"projection {projection.name} running on {where}\n")
            sys.stderr.flush()
        await _run_together(workers, stop)


async def _run_together(workers: Sequence[ProjectionWorker], stop: asyncio.Event) -> None:
    """Run every worker until ``stop`` is set; the first to fail sets it, and its error is raised once all end."""

    async def run(worker: ProjectionWorker) -> None:
        try:
            await worker.run(stop)
        except BaseException:
            stop.set()
            raise

    outcomes = await asyncio.gather(*(run(worker) for worker in workers), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
