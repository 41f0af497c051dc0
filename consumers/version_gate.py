"""Which generation a projection worker may write: only one built by its own ``version``.

When the active generation is newer (a rebuild by newer code switched readers) the worker must stop:
:func:`refuse_newer` raises :class:`ProjectionVersionMismatch`. When it is older (new code deployed before its
rebuild), the worker waits, writing nothing, until a generation of its version is active: :func:`await_own_version`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from consumers.errors import ProjectionVersionMismatch
from projections.tracking import Generation, active_generation

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import psycopg

    from projections.base import Projection

log = logging.getLogger("consumers.worker")

#: How often a worker waiting for a generation of its version looks again, and how often it says so in the log.
VERSION_POLL_S = 1.0
VERSION_LOG_EVERY_S = 60.0


def refuse_newer(gen: Generation, projection: Projection) -> None:
    """Raise when ``gen`` was built by a newer version of ``projection`` than this code's."""
    if gen.version > projection.version:
        raise ProjectionVersionMismatch(
            f"{gen.schema} is active and was built by version {gen.version} of projection "
            f"{projection.name}; this code is version {projection.version} and must not write it: "
            "deploy the newer code (or `agl projections rollback` with it)"
        )


async def await_own_version(
    projection: Projection,
    *,
    connection: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
    take: Callable[[psycopg.AsyncConnection[Any]], Awaitable[bool]],
    stop: asyncio.Event | None,
    poll_s: float = VERSION_POLL_S,
) -> bool:
    """Poll until no generation or one of this code's version is active and ``take`` takes it; ``False`` if stopped.

    ``take`` loads the generation to write (creating generation 1 if it was dropped meanwhile) and answers whether
    it is of this version: a rollback racing the look makes it answer ``False``, and the poll goes on.

    Raises:
        ProjectionVersionMismatch: a generation of a newer version became active.
    """
    logged = time.monotonic()
    while stop is None or not stop.is_set():
        conn = await connection()
        gen = await active_generation(conn, projection.name)
        if gen is None or gen.version == projection.version:
            if await take(conn):
                return True
        else:
            refuse_newer(gen, projection)
        if time.monotonic() - logged > VERSION_LOG_EVERY_S:
            logged = time.monotonic()
            log.warning("%s: still waiting for version %d", projection.name, projection.version)
        if stop is None:
            await asyncio.sleep(poll_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)
    return False
