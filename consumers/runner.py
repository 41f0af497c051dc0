"""Run a projection worker as a process: SIGTERM or SIGINT drain the batch in flight, then the worker exits."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import TYPE_CHECKING

from consumers.worker import ProjectionWorker
from core.errors import ConfigError

if TYPE_CHECKING:
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
    stop = asyncio.Event()
    install_stop_handlers(stop)
    async with worker_for(projection, settings, batch_size=batch_size, use_group=use_group) as worker:
        # One line for whoever supervises this process: from here on a SIGTERM drains and exits cleanly.
        where = worker.generation.schema if worker.generation else f"(waiting for version {projection.version})"
        sys.stderr.write(f"projection {projection.name} running on {where}\n")
        sys.stderr.flush()
        await worker.run(stop)
