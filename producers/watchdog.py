"""The watchdog: ends attempts past their ``timeout_seconds`` or ``unresponsive_seconds`` (the rollout is then
requeued or failed by the retry rules), deciding through the same write model as every other decision.

It runs as its own supervised process under ``agl up`` (and may run several times over: each rollout is decided
under its row lock, skipping rollouts another decision holds). It also runs an outbox relay, so decisions keep
reaching Kafka while the API is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import psycopg

from core.pg_session import configure_session
from producers.idempotency import migrate_commands
from producers.lifecycle_endings import expire_overdue
from producers.outbox import OutboxRelay
from producers.publisher import EventPublisher

if TYPE_CHECKING:
    from core.config import Settings

log = logging.getLogger(__name__)
SOURCE = "/agl/watchdog"


async def run_watchdog(settings: Settings, stop: asyncio.Event, *, interval_s: float = 0.5) -> None:
    """Sweep for overdue attempts every ``interval_s`` until ``stop`` is set."""
    assert settings.database_url is not None and settings.kafka_bootstrap is not None
    url = settings.database_url
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate_commands(conn)  # the watchdog may start before the API has created the tables
    async with (
        EventPublisher(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix) as publisher,
        OutboxRelay(url, publisher, retention_s=settings.outbox_retention_s) as relay,
    ):
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await configure_session(conn)
                    while not stop.is_set():
                        ended = await expire_overdue(conn, publisher, {"source": SOURCE})
                        if ended:
                            log.info("watchdog ended %d overdue attempts", ended)
                            relay.kick()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), interval_s)
            except (psycopg.OperationalError, OSError) as e:
                log.warning("watchdog lost PostgreSQL (%s); reconnecting", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
