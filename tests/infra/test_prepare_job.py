"""The scripts the Kubernetes manifests run (infra/k8s/base/prepare.py and probe.py), against the real Kafka and
PostgreSQL, as the Job and the liveness probe run them: a process with the settings in its environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from schemas.topics import INTERNAL_TOPICS, META, ROLLOUTS, TOPICS

pytestmark = [pytest.mark.kafka, pytest.mark.pg]
BASE = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "base"


def run(script: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Blocking on purpose: the test waits for the script's exit code, as Kubernetes does.
    return subprocess.run(
        [sys.executable, str(BASE / script), *args],
        env=os.environ | env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_prepare_creates_topics_and_epoch_then_probe_sees_a_stall(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    env = {
        "AGL_KAFKA_BOOTSTRAP": kafka_bootstrap, "AGL_DATABASE_URL": pg_url, "AGL_TOPIC_PREFIX": topic_prefix,
        "AGL_DATA_DIR": str(tmp_path), "AGL_LLM_ENDPOINT": "", "AGL_LLM_MODEL": "",
    }  # fmt: skip
    first = run("prepare.py", [], env)
    assert first.returncode == 0, first.stderr
    assert "prepared" in first.stdout and "not published" in first.stdout
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    assert {t.full_name(topic_prefix) for t in (*TOPICS, *INTERNAL_TOPICS)} <= topics
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM stack_state WHERE key = 'log_epoch'")
        row = await cur.fetchone()
    assert row is not None and row[0] == 1, "the broker log's epoch is remembered"
    again = run("prepare.py", [], env)
    assert again.returncode == 0, again.stderr
    assert first.stdout.split("log epoch ")[1].split()[0] == again.stdout.split("log epoch ")[1].split()[0]
    assert META.full_name(topic_prefix) in topics

    healthy = run("probe.py", ["projection", "rollouts"], env)
    assert healthy.returncode == 0, healthy.stderr

    # A worker that stored its position long ago while a record waits: stalled, so Kubernetes restarts it.
    topic = ROLLOUTS.full_name(topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"r1", partition=0)
    finally:
        await producer.stop()
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO projection_generations (projection, generation, schema_name, version, state) "
            "VALUES ('rollouts', 1, 'rollouts_g1', 1, 'active')"
        )
        await conn.execute(
            "INSERT INTO projection_offsets (projection, topic, partition, next_offset, updated_at) "
            "VALUES ('rollouts_g1', %s, 0, 0, now() - interval '10 minutes')",
            (topic,),
        )
    stalled = run("probe.py", ["projection", "rollouts"], env)
    assert stalled.returncode == 1, stalled.stderr
    assert "rollouts generation 1 is stalled" in stalled.stderr
    other = run("probe.py", ["projection", "spans"], env)
    assert other.returncode == 0, "only the named projection's stall fails its probe"
