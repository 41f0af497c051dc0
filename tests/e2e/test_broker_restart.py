"""The broker stops and starts again while runners work: decisions keep being taken (they live in PostgreSQL),
the outbox holds their events until the broker is back, and every rollout ends succeeded exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agl.config import KAFKA_VERSION
from agl.stack._process import free_port
from agl.stack.brokers import ApacheKafka, java_available
from producers.admin import ensure_topics
from schemas.topics import INTERNAL_TOPICS, TOPICS
from tests.e2e.conftest import live_services
from tests.e2e.test_failures import enqueue, until
from tests.fixtures.kafka import requested_broker
from tests.fixtures.services import KAFKA_LIBS_CACHE

pytestmark = [pytest.mark.kafka, pytest.mark.pg, pytest.mark.slow]


async def test_a_broker_restart_mid_run_loses_nothing_and_runs_nothing_twice(pg_url: str, tmp_path: Path):
    if requested_broker() != "kafka" or not java_available():
        pytest.skip("restarts a broker of its own with its log on disk: Apache Kafka only (Tansu keeps its log in "
                    "memory; its restarts are covered by the archive restore tests)")  # fmt: skip
    port, controller_port = free_port(), free_port()

    def broker() -> ApacheKafka:  # the same broker (its log on disk, its ports) each time it starts
        libs = KAFKA_LIBS_CACHE / f"kafka-{KAFKA_VERSION}"
        return ApacheKafka(data_dir=tmp_path / "kafka", libs_dir=libs, port=port, controller_port=controller_port)

    kafka = broker()
    await kafka.start(120)
    try:
        bootstrap = kafka.info.bootstrap
        await ensure_topics(bootstrap, (*TOPICS, *INTERNAL_TOPICS), prefix="r.")
        async with live_services(bootstrap, "r.", pg_url, tmp_path) as live:
            ids = [f"ro-b-{i}" for i in range(30)]
            await enqueue(live, *({"rollout_id": r, "input": i} for i, r in enumerate(ids[:15])))
            live.runner("runner-a", "tests.e2e.agents:quick", "--slots", "2", "--heartbeat", "0.5")
            await until(live, ids[:2], {"succeeded"})
            await kafka.stop()
            await asyncio.sleep(3)  # runners keep reporting: their decisions wait in the outbox
            kafka = broker()
            await kafka.start(120)
            await enqueue(live, *({"rollout_id": r, "input": i} for i, r in enumerate(ids[15:])))
            done = await until(live, ids, {"succeeded", "failed", "cancelled"}, timeout=180)
            assert [d["status"] for d in done] == ["succeeded"] * len(ids)
            assert {(d["attempt_count"], d["attempts"][0]["worker_id"]) for d in done} == {(1, "runner-a")}
    finally:
        await kafka.stop()
