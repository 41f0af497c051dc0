"""The episode worker: finished rollouts in, one episodic memory each out (``knowledge.episodes``).

It runs the episode fold on the projection engine (consumer group ``agl.projection.episodes``, co-partitioned
rollouts, rewards and spans, positions stored with the rows, a lock per rollout) and an outbox relay beside it:
the fold appends its documents to the outbox in its own transaction, the relay publishes them once committed. So
no Kafka I/O happens inside a PostgreSQL transaction, a crash at any point neither loses nor doubles an episode,
and several instances may run (each rollout has one owner; one relay publishes, elected by the outbox's lock).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from consumers.worker import ProjectionWorker
from knowledge.episodes import episodes_projection
from producers.outbox import OutboxRelay
from producers.publisher import EventPublisher

if TYPE_CHECKING:
    from knowledge.episodes import EpisodePolicy

log = logging.getLogger(__name__)


class EpisodeWorker:
    """Writes episodes until ``stop`` is set. ``use_group=False`` takes every partition (one instance, tests)."""

    def __init__(
        self,
        policy: EpisodePolicy,
        *,
        bootstrap: str,
        database_url: str,
        topic_prefix: str = "",
        use_group: bool = True,
        relay_poll_s: float = 1.0,
        outbox_retention_s: float | None = None,
    ) -> None:
        self.policy = policy
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.topic_prefix = topic_prefix
        self.use_group = use_group
        self.relay_poll_s = relay_poll_s
        #: its relay may be the one that leads: then it prunes the outbox (``producers.outbox_retention``)
        self.outbox_retention_s = outbox_retention_s
        #: Set once the fold's consumer has joined and the relay runs.
        self.ready = asyncio.Event()
        self.worker: ProjectionWorker | None = None

    async def run(self, stop: asyncio.Event) -> None:
        async with EventPublisher(self.bootstrap, topic_prefix=self.topic_prefix) as publisher:
            projection = episodes_projection(self.policy, publisher)
            worker = ProjectionWorker(
                projection, bootstrap=self.bootstrap, database_url=self.database_url,
                topic_prefix=self.topic_prefix, use_group=self.use_group,
            )  # fmt: skip
            self.worker = worker
            relay = OutboxRelay(
                self.database_url, publisher, poll_s=self.relay_poll_s, retention_s=self.outbox_retention_s
            )
            async with relay, worker:
                self.ready.set()
                await worker.run(stop)
