"""A transaction sent in pipeline mode: statements whose results nobody reads yet go out without a round trip.

A decision's transaction runs several statements, and only some of their results are read before the next is sent
(never those of ``BEGIN`` or of an ``UPDATE``). In psycopg's pipeline mode each statement is sent at once and the
connection waits only when a result is fetched, or at the end: an enqueue's transaction waits three times instead of
six, a claim's three times instead of seven, a batch of reports three or four times instead of eight or nine.
``bench/pipelined_tx.py`` measures a claim-shaped transaction both ways: 12-26% less time per transaction, about 10%
less CPU in the server, the same CPU in the client. So the gain is latency under load, where every wait is a trip
through a busy event loop, not throughput. What the transaction does, and which errors it raises, is unchanged: an
error raised by a statement whose result was not read surfaces at the next read or at the end, with its own type,
and the transaction rolls back.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from psycopg import AsyncConnection


@contextlib.asynccontextmanager
async def pipelined_transaction(conn: AsyncConnection[Any]) -> AsyncIterator[None]:
    """``conn.transaction()`` with the statements sent in pipeline mode (see the module docstring)."""
    async with conn.pipeline(), conn.transaction():
        yield
