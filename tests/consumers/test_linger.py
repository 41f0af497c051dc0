"""A projection that lingers (``Projection.linger_ms``) takes a trickle of events in fewer, larger batches.

Under a trickle (a few events a second, each its own fetch) a read model nobody waits on to the millisecond
(spans, triplets, the archive) spent one transaction per event or two; lingering, the broker holds its fetch until
more has arrived or ``linger_ms`` has passed. The rollouts read model, which users wait on, does not linger.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from consumers.worker import ProjectionWorker
from projections.errors import ProjectionDefinitionError
from projections.registry import BUILTIN, load_object
from projections.rollouts import PROJECTION as ROLLOUTS
from schemas import TOPIC_BY_EVENT, encode
from tests.consumers.helpers import lifecycle, running, wait_for_total

LINGERING = replace(ROLLOUTS, name="lingering", linger_ms=2_000)
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
    events = [e for i in range(2) for e in lifecycle(i)]
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
            for event in events:  # one by one, 100 ms apart: a trickle
                value, headers = encode(event)
                topic = TOPIC_BY_EVENT[type(event)].full_name(kafka_topics)
                await producer.send_and_wait(topic, value, key=event.key(), headers=headers)
                await asyncio.sleep(0.1)
        await wait_for_total(pg_url, "eager_g1", len(events))
        await wait_for_total(pg_url, "lingering_g1", len(events))
    # The trickle spans about a second and a half, within one or two of the lingering fetches; the eager one takes
    # events as they come (each alone on Apache Kafka; Tansu answers a fetch later, with a few).
    assert batches["lingering"] <= 2 < batches["eager"], (batches, len(events))


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
