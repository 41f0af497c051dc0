"""Topic administration: create the registry's topics explicitly, and describe them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from schemas.topics import TopicSpec

log = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec], *, prefix: str = "", replication_factor: int = 1
) -> list[str]:
    """Create every topic of ``specs`` that does not exist yet; return the names it created.

    An existing topic is left as it is (its partition count cannot shrink, and changing it would move keys
    between partitions and break per-key order), but a mismatch is logged.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {spec.full_name(prefix): spec for spec in specs}
        missing = [
            NewTopic(name, spec.partitions, replication_factor, topic_configs=dict(spec.configs))
            for name, spec in wanted.items()
            if name not in existing
        ]
        created: list[str] = []
        for topic in missing:
            # One request per topic: a batch fails whole when another process created one of them meanwhile.
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        present = [n for n in wanted if n in existing]
        if present:
            for meta in await admin.describe_topics(present):
                spec = wanted[meta["topic"]]
                if len(meta["partitions"]) != spec.partitions:
                    log.warning(
                        "topic %s has %d partitions, the registry says %d",
                        meta["topic"],
                        len(meta["partitions"]),
                        spec.partitions,
                    )
        return created
    finally:
        await admin.close()
