"""A transaction sent in pipeline mode: statements whose results nobody reads yet go out without a round trip.

A decision's transaction runs several statements, and only some of their results are read before the next is sent
(never those of ``BEGIN`` or of an ``UPDATE``). In psycopg's pipeline mode each statement is sent at once and the
connection waits only when a result is fetched, or at the end.

``BEGIN`` and ``COMMIT`` are statements of the pipeline here, not psycopg's ``transaction()``: inside a pipeline
that block syncs on entering (for ``BEGIN``), on leaving (twice: for the last statements, then for ``COMMIT``), and
the pipeline's own exit syncs once more, so a transaction reading two results waited six times, against seven
plainly (counted with libpq's protocol trace). Sent as statements, it waits at each read and once at the end, where
``COMMIT`` goes out with the last statements and the Sync: three times for that transaction. An error keeps its
type: a statement that failed (read or not) makes the server skip the rest up to the Sync, ``COMMIT`` included,
and the error surfaces at the next read or at the end; the transaction is then rolled back, as it is when the
block raises. ``bench/pipelined_tx.py`` measures a claim-shaped transaction both ways.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from psycopg import pq

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from psycopg import AsyncConnection

_OPEN = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)


@contextlib.asynccontextmanager
async def pipelined_transaction(conn: AsyncConnection[Any]) -> AsyncIterator[None]:
    """A transaction with its statements sent in pipeline mode (see the module docstring).

    ``conn`` is in autocommit mode and outside any transaction, as the API's pooled connections are; anywhere else
    (psycopg would open a transaction of its own, or this one would nest) it is ``conn.transaction()`` pipelined.
    """
    if not conn.autocommit or conn.info.transaction_status != pq.TransactionStatus.IDLE or conn._pipeline:
        async with conn.pipeline(), conn.transaction():
            yield
        return
    try:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            yield
            await conn.execute("COMMIT")
    finally:
        # The block raised, or a statement failed (the server then skipped COMMIT): the transaction is still open.
        if not conn.broken and conn.info.transaction_status in _OPEN:
            await conn.execute("ROLLBACK")
