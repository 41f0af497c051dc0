"""Wake read-your-writes waits when a projection applies a batch: one LISTEN connection per process.

Right after each apply transaction commits, the engine sends ``NOTIFY agl_applied, '<generation schema>'``
(:func:`notify_applied`), so a notification means the positions it announces are visible. A waiting read therefore
holds no pooled connection: it checks the positions (a short use of the pool), then sleeps until a notification
for its generation arrives, and checks again.

Race-free without a second check: :meth:`AppliedListener.mark` is taken *before* the positions are read, and
:meth:`AppliedListener.wait` returns at once when a notification of that schema arrived since the mark (it was
the one the read could have missed). Notifications are not a guarantee (the connection may be down or
reconnecting, a rebuild may switch generations under a waiter), so every wait is also bounded by
``fallback_poll_s``: at worst a waiter re-checks at that slow pace, as it would with no listener at all.

One notification wakes every waiter of its schema; :meth:`AppliedListener.shared` lets them re-check with one
query between them, so the cost of a commit does not grow with the number of waiting reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, TypeVar, cast

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from psycopg import AsyncConnection

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The channel the apply transaction notifies, with the generation's schema as payload.
CHANNEL = "agl_applied"
#: A waiter re-checks at least this often on its own (listener down, a notification it could not see).
FALLBACK_POLL_S = 1.0
#: A quiet LISTEN connection is pinged this often, so a dead one is noticed and replaced.
HEALTH_CHECK_S = 10.0
#: Reconnection backoff, from the first to the largest delay.
RECONNECT_S = (0.5, 5.0)
#: How long ``start`` waits for the first LISTEN before letting waits fall back to polling.
START_WAIT_S = 5.0
#: Shows the connection for what it is in ``pg_stat_activity``.
APPLICATION_NAME = "agl-applied-listener"


async def notify_applied(conn: AsyncConnection[Any], schema: str) -> None:
    """Tell the listeners that ``schema`` committed new positions; call right after the apply's commit.

    Not inside the apply transaction: PostgreSQL serialises the commits of notifying transactions on one
    database-wide lock held through the commit's WAL flush, so a NOTIFY there would queue every projection's
    commits behind one another's and the command outbox's fsyncs (the outbox notifies its relay at each commit).
    A transaction of its own that does not wait for its flush holds that lock for a moment only; were it lost in a
    crash, waiters would fall back to their slow poll.
    """
    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        # One round trip (several statements and no parameters: the simple query protocol).
        stmt = "BEGIN; SET LOCAL synchronous_commit TO OFF; NOTIFY {}, {}; COMMIT"
        await conn.execute(sql.SQL(stmt).format(sql.Identifier(CHANNEL), sql.Literal(schema)))
    else:  # inside the caller's transaction: delivered when it commits
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, schema))


class AppliedListener:
    """One dedicated LISTEN connection that wakes the waiters of a generation's schema when it applies a batch.

    ``start`` / ``stop`` (idempotent) or ``async with``. Waiters call :meth:`mark`, read the positions, then
    :meth:`wait`.
    """

    def __init__(self, database_url: str, *, fallback_poll_s: float = FALLBACK_POLL_S) -> None:
        self.database_url = database_url
        self.fallback_poll_s = fallback_poll_s
        #: Notifications received (and listener state changes, which count as a notification for every schema).
        self._seq = 0
        #: Per schema, the value of ``_seq`` at its last notification.
        self._last: dict[str, int] = {}
        #: ``_seq`` at the last state change: every waiter older than it must re-check.
        self._everyone = 0
        #: Per schema, the event its current waiters sleep on (replaced on each notification).
        self._events: dict[str, asyncio.Event] = {}
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Per key, the read running now and the mark it began at (see :meth:`shared`).
        self._reads: dict[str, tuple[int, asyncio.Future[Any]]] = {}

    @property
    def listening(self) -> bool:
        """Whether notifications arrive now (else waits re-check every ``fallback_poll_s``)."""
        return self._listening.is_set()

    async def start(self) -> None:
        """Start listening in the background; wait (bounded) for the first LISTEN, so early reads benefit."""
        assert self._task is None, "AppliedListener started twice"
        self._task = asyncio.create_task(self._run(), name="agl-applied-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), START_WAIT_S)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aenter__(self) -> AppliedListener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def mark(self) -> int:
        """A point in the notification stream: take it before reading positions, pass it to :meth:`wait`."""
        return self._seq

    async def wait(self, schema: str, since: int, timeout_s: float) -> None:
        """Return when ``schema`` was notified after ``since``, the listener changed state, or after a while.

        The while is ``timeout_s`` capped by ``fallback_poll_s``: the caller re-checks the positions either way.
        """
        if max(self._last.get(schema, 0), self._everyone) > since:
            return
        event = self._events.get(schema)
        if event is None:
            event = self._events[schema] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(0.0, min(timeout_s, self.fallback_poll_s)))

    async def shared(self, key: str, since: int, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``, or the result of the one of ``key`` running now if it began at or after the mark ``since``.

        A read that began after the caller's mark sees every commit notified before it, which is all the caller
        needs: later commits wake it again. So the waiters one notification wakes share one query.
        """
        running = self._reads.get(key)
        if running is None or running[0] < since:
            future: asyncio.Future[Any] = asyncio.ensure_future(read())
            running = self._reads[key] = (self._seq, future)
            future.add_done_callback(lambda done: self._read_done(key, done))
        return cast("T", await asyncio.shield(running[1]))

    def _read_done(self, key: str, future: asyncio.Future[Any]) -> None:
        if (running := self._reads.get(key)) is not None and running[1] is future:
            del self._reads[key]
        if not future.cancelled():
            future.exception()  # retrieved: every caller may have gone (their shields were cancelled)

    def _notified(self, schema: str) -> None:
        self._seq += 1
        self._last[schema] = self._seq
        if (event := self._events.pop(schema, None)) is not None:
            event.set()

    def _wake_everyone(self) -> None:
        # Notifications may have been missed while the connection changed: every waiter checks for itself.
        self._seq += 1
        self._everyone = self._seq
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    async def _run(self) -> None:
        delay = RECONNECT_S[0]
        while True:
            was_up = False
            try:
                await self._listen()
            except (psycopg.Error, OSError) as e:
                log.warning(
                    "applied listener down (%s): reads re-check every %gs until it is back", e, self.fallback_poll_s
                )
            finally:
                was_up = self._down()
            if was_up:  # reconnect soon, and back off only while connecting keeps failing
                delay = RECONNECT_S[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])

    def _down(self) -> bool:
        """Mark the listener down; whether it was up."""
        if not self.listening:
            return False
        self._listening.clear()
        self._wake_everyone()
        return True

    async def _listen(self) -> None:
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": APPLICATION_NAME}
        async with await psycopg.AsyncConnection.connect(self.database_url, **kwargs) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            self._listening.set()
            self._wake_everyone()
            while True:
                async for notify in conn.notifies(timeout=HEALTH_CHECK_S):
                    self._notified(notify.payload)
                # Quiet for a while: a connection cut without a FIN would otherwise look quiet for ever.
                await conn.execute("SELECT 1")
