"""The transactional outbox: decisions are committed with their events, and a relay publishes them afterwards.

No Kafka I/O ever happens inside a PostgreSQL transaction: a deciding transaction appends its encoded records
to ``outbox`` and commits (a NOTIFY wakes the relay); the relay publishes pending rows in id order and marks
them published with their positions. Waiters (a command that answers with a position) wake on the relay's
NOTIFY and read their rows' positions.

Several relays may run (every API process and the watchdog start one): a session advisory lock elects one
publisher, so records of one key are never published by two relays at once and stay in decision order. A relay
killed between publishing and marking republishes the same records (same event ids) on the next start;
consumers deduplicate by event id, so that is harmless. The leading relay of a process that sets a retention
also deletes old published rows (``producers.outbox_retention``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from core.pg_session import configure_session
from producers.outbox_retention import PRUNE_EVERY_S, prune_outbox
from schemas import Position

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    from producers.publisher import EventPublisher, Record
    from schemas import Event

log = logging.getLogger(__name__)

#: NOTIFY channels: new outbox rows (wakes the relay) and rows published (wakes waiters).
PENDING_CHANNEL = "agl_outbox"
PUBLISHED_CHANNEL = "agl_outbox_published"
#: The advisory lock key that elects the one publishing relay of a database ("aglrelay" in ASCII, as an int8).
RELAY_LOCK = 0x61676C72656C6179 & 0x7FFFFFFFFFFFFFFF
BATCH = 2000
#: At most this many published positions are kept in memory for local waiters.
KNOWN_LIMIT = 100_000


async def append(conn: AsyncConnection[Any], publisher: EventPublisher, events: Sequence[Event]) -> list[int]:
    """Append ``events`` to the outbox in order (inside the deciding transaction); returns their row ids.

    Each event is encoded and size-checked here, so an event too large to publish fails the decision instead of
    blocking the relay later.
    """
    return await append_records(conn, [publisher.record_of(event) for event in events])


async def append_records(conn: AsyncConnection[Any], records: Sequence[Record]) -> list[int]:
    """:func:`append` of records already encoded (``EventPublisher.record_of``, which checked their size)."""
    if not records:
        return []
    # One round trip: the rows, and the NOTIFY that wakes the relay at commit. The arrays go in binary (%b):
    # in text format they are escaped element by element in Python, the costliest part of a decision by far.
    cur = await conn.execute(
        "WITH ins AS (INSERT INTO outbox (topic, key, value, headers)"
        " SELECT topic, key, value, headers FROM unnest(%b::text[], %b::bytea[], %b::bytea[], %b::text[])"
        " WITH ORDINALITY AS r(topic, key, value, headers, n)"
        " ORDER BY n RETURNING id), woken AS (SELECT pg_notify(%s, ''))"
        " SELECT ins.id FROM ins, woken",
        (*_columns(records), PENDING_CHANNEL),
    )
    return sorted(row[0] for row in await cur.fetchall())


def _columns(records: Sequence[Record]) -> tuple[list[Any], ...]:
    topics, keys, values, headers = [], [], [], []
    for topic, key, value, record_headers in records:
        topics.append(topic)
        keys.append(key)
        values.append(value)
        # latin-1 maps every byte to one character, so any header value round-trips through JSON text.
        headers.append(orjson.dumps([[name, v.decode("latin-1")] for name, v in record_headers]).decode())
    return topics, keys, values, headers


class OutboxRelay:
    """Publishes the outbox while it holds the relay lock; wakes waiters when rows are published.

    Lifecycle as aiokafka's: ``start()`` opens the listener, ``stop()`` (idempotent) ends it;
    ``async with`` does both.
    """

    def __init__(
        self,
        database_url: str,
        publisher: EventPublisher,
        *,
        poll_s: float = 1.0,
        publish_wait_s: float = 10.0,
        retention_s: float | None = None,
        prune_every_s: float = PRUNE_EVERY_S,
    ) -> None:
        self._url = database_url
        #: while this relay leads, published rows older than this are pruned (``producers.outbox_retention``);
        #: None: this relay never prunes (a short-lived command's)
        self.retention_s = retention_s
        self._prune_every_s = prune_every_s
        self._pruning: asyncio.Task[None] | None = None
        #: how long a command waits for its records to be published before answering 503 (they stay committed)
        self.publish_wait_s = publish_wait_s
        self._publisher = publisher
        self._poll_s = poll_s
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._published = asyncio.Condition()
        self._closed = False
        self.is_leader = False
        #: positions of rows this process's relay published, until their waiter takes them
        self._known: dict[int, Position] = {}
        #: the highest row id a relay in another process said it published
        self._remote_max = -1

    async def start(self) -> None:
        assert self._task is None, "Did you call start twice?"
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        if self.retention_s is not None:
            self._pruning = asyncio.create_task(self._prune_while_leading(self.retention_s), name="outbox-prune")

    async def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._task, self._pruning):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def __aenter__(self) -> OutboxRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def kick(self) -> None:
        """Publish now (a local command just committed rows)."""
        self._wake.set()

    async def wait_published(
        self, pool: AsyncConnectionPool[Any], ids: Sequence[int], timeout_s: float
    ) -> list[Position]:
        """The positions of outbox rows ``ids`` once published, in the order given.

        No connection is held while waiting. Rows this process's relay published are known in memory; rows a relay
        in another process published are read back once its NOTIFY says it has published that far.

        Raises:
            TimeoutError: not all were published within ``timeout_s`` (the broker is down, say).
        """
        if not ids:
            return []
        self.kick()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        wanted = list(dict.fromkeys(ids))
        found: dict[int, Position] = {}
        read_at_remote = -1  # the remote high mark of the last read from PostgreSQL
        next_read = loop.time() + self._poll_s
        while True:
            for i in wanted:
                if i not in found and i in self._known:
                    found[i] = self._known.pop(i)
            missing = [i for i in wanted if i not in found]
            if not missing:
                return [found[i] for i in ids]
            if (self._remote_max >= max(missing) and self._remote_max != read_at_remote) or loop.time() >= next_read:
                read_at_remote, next_read = self._remote_max, loop.time() + self._poll_s
                async with pool.connection() as conn:
                    cur = await conn.execute(
                        'SELECT id, topic, "partition", "offset" FROM outbox WHERE id = ANY(%b) AND published',
                        (missing,),
                    )
                    for row in await cur.fetchall():
                        found[row[0]] = Position(topic=row[1], partition=row[2], offset=row[3])
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{len(missing)} outbox records not published in {timeout_s}s")
            async with self._published:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._published.wait(), min(remaining, next_read - loop.time()))

    async def wait_activity(self, timeout_s: float) -> None:
        """Wait until the outbox moves (rows appended or published anywhere), at most ``timeout_s``."""
        async with self._published:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait(), timeout_s)

    async def _notify_waiters(self) -> None:
        async with self._published:
            self._published.notify_all()

    async def _prune_while_leading(self, retention_s: float) -> None:
        """Prune the outbox every ``prune_every_s`` while this relay leads, on a connection of its own."""
        while not self._closed:
            await asyncio.sleep(self._prune_every_s)
            if not self.is_leader:
                continue
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await prune_outbox(conn, retention_s)
            except (psycopg.Error, OSError) as e:  # tried again at the next turn
                log.warning("outbox prune failed (%s); trying again in %.0f s", e, self._prune_every_s)
            except Exception:  # as the relay's loop does: logged, and pruning goes on at the next turn
                log.exception("outbox prune failed; trying again in %.0f s", self._prune_every_s)

    # -- the loop ---------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._closed:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (psycopg.OperationalError, OSError) as e:
                log.warning("outbox relay lost PostgreSQL (%s); reconnecting", e)
                self.is_leader = False
                await asyncio.sleep(self._poll_s)
            except Exception:
                log.exception("outbox relay failed; restarting it")
                self.is_leader = False
                await asyncio.sleep(self._poll_s)

    async def _session(self) -> None:
        # Two connections: one publishes (and holds the session lock when leader), one only listens. The listener
        # takes every notification as it comes: several arrive in one packet under load, and a listener that
        # stopped after the first (as this one did) dropped the rest, so a waiter missed "published" and a leader
        # missed "pending" until the next poll, a second later.
        async with (
            await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn,
            await psycopg.AsyncConnection.connect(self._url, autocommit=True) as listener,
        ):
            await configure_session(conn)
            await listener.execute(f"LISTEN {PENDING_CHANNEL}")
            await listener.execute(f"LISTEN {PUBLISHED_CHANNEL}")
            listening = asyncio.create_task(self._listen(listener), name="outbox-relay-listener")
            loop = asyncio.get_running_loop()
            next_try = loop.time()
            try:
                while not self._closed:
                    if listening.done():
                        listening.result()  # the listener's connection failed: this session ends with it
                        raise psycopg.OperationalError("the outbox listener stopped")
                    # Cleared before looking: a wake from now on means rows this look may not have seen.
                    self._wake.clear()
                    if not self.is_leader and loop.time() >= next_try:
                        # Once per poll interval, not at every wake: new rows are the leader's to publish, and a
                        # follower that asked for the lock at each of their NOTIFYs ran a statement per commit in
                        # the whole system (the watchdog's relay: 0.08 ms of CPU per enqueued rollout, now 0.04
                        # with its sweeps). A leader that dies frees the lock with its session; a follower takes
                        # over within the interval.
                        next_try = loop.time() + self._poll_s
                        self.is_leader = await self._try_lead(conn)
                    if self.is_leader:
                        published = await self._publish_pending(conn)
                        if published:
                            await self._notify_waiters()
                            continue  # more may be pending
                        await self._idle(listening)
                    else:
                        await self._follow(listening, next_try - loop.time())
            finally:
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listening

    async def _idle(self, listening: asyncio.Task[None]) -> None:
        """Wait for new rows (a NOTIFY or a local kick), the listener's end, or the poll interval."""
        kicked = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({kicked, listening}, timeout=self._poll_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            kicked.cancel()
        await self._notify_waiters()

    async def _try_lead(self, conn: AsyncConnection[Any]) -> bool:
        """Take the relay lock if no session holds it (it is held until this session ends)."""
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK,))
        row = await cur.fetchone()
        return bool(row and row[0])

    async def _follow(self, listening: asyncio.Task[None], until_next_try_s: float) -> None:
        """A follower waits for its next try at the lock (or the listener's end); wakes are not its business."""
        await asyncio.wait({listening}, timeout=max(0.0, until_next_try_s))

    async def _listen(self, listener: AsyncConnection[Any]) -> None:
        async for notify in listener.notifies():
            if notify.channel == PUBLISHED_CHANNEL:
                if notify.payload.isdigit():
                    self._remote_max = max(self._remote_max, int(notify.payload))
                await self._notify_waiters()
            else:
                self._wake.set()

    async def _publish_pending(self, conn: AsyncConnection[Any]) -> int:
        cur = await conn.execute(
            "SELECT id, topic, key, value, headers FROM outbox WHERE NOT published ORDER BY id LIMIT %s",
            (BATCH,),
            binary=True,
        )
        rows = await cur.fetchall()
        if not rows:
            return 0
        records: list[Record] = []
        for _, topic, key, value, stored in rows:
            headers = [(name, v.encode("latin-1")) for name, v in orjson.loads(stored)]
            records.append((topic, None if key is None else bytes(key), bytes(value), headers))
        # Outside any transaction: the rows stay pending until the broker has them.
        positions = await self._publisher.publish_records(records)
        if len(self._known) > KNOWN_LIMIT:  # rows nobody here waits for (published for another process)
            self._known.clear()
        # Known here before the NOTIFY goes out: this relay's own listener hears it too, and a local waiter it wakes
        # then finds its positions in memory instead of reading them back.
        self._known.update(zip((r[0] for r in rows), positions, strict=True))
        # One statement, one round trip: the NOTIFY goes out when the rows, marked, are committed.
        await conn.execute(
            'WITH marked AS (UPDATE outbox SET published = true, "partition" = p.part, "offset" = p.off'
            " FROM unnest(%b::bigint[], %b::int[], %b::bigint[]) AS p(id, part, off) WHERE outbox.id = p.id)"
            " SELECT pg_notify(%s, %s)",
            (
                [r[0] for r in rows],
                [p.partition for p in positions],
                [p.offset for p in positions],
                PUBLISHED_CHANNEL,
                str(rows[-1][0]),
            ),
        )
        return len(rows)
