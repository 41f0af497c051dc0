"""A projection that lingers (``Projection.linger_ms``) takes a trickle of events in fewer, larger batches.

Under a trickle (a few events a second, each its own fetch) a read model nobody waits on to the millisecond
(spans, triplets, the archive) spent one transaction per event or two; lingering, the broker holds its fetch until
more has arrived or ``linger_ms`` has passed. The rollouts read model, which users wait on, does not linger.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from consumers.worker import ProjectionWorker
from projections.base import MAX_LINGER_MS
from projections.errors import ProjectionDefinitionError
from projections.registry import BUILTIN, load_object
from projections.rollouts import PROJECTION as ROLLOUTS
from schemas import TOPIC_BY_EVENT, encode
from tests.consumers.helpers import lifecycle, running, wait_for_total

LINGERING = replace(ROLLOUTS, name="lingering", linger_ms=MAX_LINGER_MS)
EAGER = replace(ROLLOUTS, name="eager")


def counting_batches(worker: ProjectionWorker, batches: Counter[str]) -> ProjectionWorker:
    process = worker.process

    async def counted(*args: Any, **kwargs: Any) -> Any:
        batches[worker.projection.name] += 1
        return await process(*args, **kwargs)

    worker.process = counted  # type: ignore[method-assign]
    return worker


@pytest.mark.kafka
@pytest.mark.pg
async def test_a_lingering_projection_takes_a_trickle_in_fewer_batches(kafka_bootstrap, kafka_topics, pg_url):
    events = [e for i in range(3) for e in lifecycle(i)]
    batches: Counter[str] = Counter()
    lingering, eager = (
        counting_batches(
            ProjectionWorker(
                p, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, use_group=False
            ),
            batches,
        )
        for p in (LINGERING, EAGER)
    )
    async with running(lingering), running(eager):
        async with AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all") as producer:
            started = time.monotonic()
            for event in events:  # one by one, 300 ms apart: a trickle
                value, headers = encode(event)
                topic = TOPIC_BY_EVENT[type(event)].full_name(kafka_topics)
                await producer.send_and_wait(topic, value, key=event.key(), headers=headers)
                await asyncio.sleep(0.3)
            trickle_s = time.monotonic() - started
        await wait_for_total(pg_url, "eager_g1", len(events))
        await wait_for_total(pg_url, "lingering_g1", len(events))
    # The trickle (15 events over about four and a half seconds) falls within one or two lingering fetches (two
    # when the first began before it); on Tansu one fetch's records were seen applied in up to three batches
    # (partitions handed out apart, it seems). The eager projection takes events as they come: each alone on
    # Apache Kafka, and on Tansu, which answers a fetch later, mostly alone.
    assert batches["lingering"] * 2 < batches["eager"], (batches, trickle_s)


def test_linger_is_bounded_and_only_read_models_nobody_waits_on_linger():
    with pytest.raises(ProjectionDefinitionError, match="linger_ms"):
        replace(ROLLOUTS, name="slow", linger_ms=60_000)
    built_in = [load_object(reference) for reference in BUILTIN]
    assert {p.name for p in built_in if p.linger_ms} == {
        "archive",
        "spans",
        "triplets",
        "memories",
        "router",
        "workers",
    }
    assert {p.name for p in built_in if not p.linger_ms} == {"rollouts", "resources", "knowledge"}
