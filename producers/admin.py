"""Topic administration: create the registry's topics explicitly, and describe them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.catalog import TOPIC_BY_EVENT, event_type
from schemas.topics import INTERNAL_TOPICS, TOPICS

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


@dataclass(frozen=True)
class TopicState:
    """A registry topic and what the broker says about it (``broker_partitions`` None: the topic is missing)."""

    spec: TopicSpec
    name: str
    broker_partitions: int | None
    leaders: tuple[int, ...] = ()

    def describe(self) -> list[str]:
        events = [event_type(cls) for cls, spec in TOPIC_BY_EVENT.items() if spec is self.spec]
        found = "missing on the broker" if self.broker_partitions is None else f"{self.broker_partitions} on the broker"
        return [
            self.name,
            f"  description  {self.spec.description}",
            f"  key          {self.spec.key}",
            f"  partitions   {self.spec.partitions} in the registry, {found}",
            f"  leaders      {', '.join(map(str, self.leaders)) or '-'}",
            f"  configs      {', '.join(f'{k}={v}' for k, v in sorted(self.spec.configs.items()))}",
            f"  events       {', '.join(events) or '-'}",
        ]


async def topic_states(bootstrap: str, *, prefix: str = "") -> list[TopicState]:
    """Every registry topic (events and internal), with its partitions and leaders on the broker."""
    specs = (*TOPICS, *INTERNAL_TOPICS)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = [spec.full_name(prefix) for spec in specs if spec.full_name(prefix) in existing]
        metas = {m["topic"]: m for m in await admin.describe_topics(present)} if present else {}
    finally:
        await admin.close()
    states = []
    for spec in specs:
        name = spec.full_name(prefix)
        meta = metas.get(name)
        if meta is None:
            states.append(TopicState(spec, name, None))
            continue
        partitions = sorted(meta["partitions"], key=lambda p: p["partition"])
        states.append(TopicState(spec, name, len(partitions), tuple(p["leader"] for p in partitions)))
    return states
