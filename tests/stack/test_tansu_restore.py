"""A restart of the memory-only Tansu broker loses nothing: `agl up` restores the log from the event archive."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.topics import SPANS
from tests.stack.test_cli import Up, agl, stack_env

pytestmark = pytest.mark.slow


def key_of(env: dict[str, str]) -> dict[str, str]:
    """The admin key `agl up` made for the local user (the stack here runs with API keys on, the default)."""
    return {"X-API-Key": (Path(env["AGL_DATA_DIR"]) / "api-key").read_text().strip()}


def enqueue(api: str, rollout_ids: list[str], headers: dict[str, str]) -> str:
    body = [{"rollout_id": r, "input": {"question": r}, "mode": "train"} for r in rollout_ids]
    answer = httpx.post(f"{api}/v1/rollouts", json=body, timeout=30, headers=headers)
    assert answer.status_code == 202, answer.text
    token: str = answer.json()["position"]
    return token


def listed(api: str, headers: dict[str, str], after: str | None = None) -> list[str]:
    params: dict[str, str | int] = {"limit": 1000}
    if after:
        params.update(after=after, wait_ms=20_000)
    answer = httpx.get(f"{api}/v1/rollouts", params=params, timeout=30, headers=headers)
    assert answer.status_code == 200, answer.text
    return sorted(item["rollout_id"] for item in answer.json()["items"])


def wait_archived(url: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            found = conn.execute("SELECT count(*) FROM archive_g1.events").fetchone()
        if found is not None and found[0] >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"the archive did not reach {count} records")


def test_a_tansu_restart_is_restored_from_the_archive_and_consumption_resumes(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="tansu")
    api = f"http://127.0.0.1:{env['AGL_API_PORT']}"
    url = f"postgresql://postgres@127.0.0.1:{env['AGL_POSTGRES_PORT']}/agl"
    first = sorted(f"ro-before-{n}" for n in range(12))
    up = Up(env)
    key = key_of(env)
    token = enqueue(api, first, key)
    assert listed(api, key, after=token) == first
    wait_archived(url, len(first))
    assert up.interrupt()[0] == 0

    up = Up(env)
    output = "".join(up.output)
    # The rollouts, and whatever else the stack had published (the default resources).
    restored = re.search(r"restored (\d+) records", output)
    assert restored is not None and int(restored[1]) >= len(first) and "LOST" not in output, output
    assert key_of(env) == key, "the saved key still works: it is reused"
    assert listed(api, key) == first, "the read model survived the restart"
    # The restored log continues where the stored positions stand: a new event is applied, nothing is skipped
    # and nothing is applied twice.
    token = enqueue(api, ["ro-after"], key)
    assert listed(api, key, after=token) == sorted([*first, "ro-after"])
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT rollout_id) FROM rollouts_g1.rollouts").fetchone()
    assert rows == (13, 13)
    assert up.interrupt()[0] == 0
    status = agl(env, "status")
    assert status.returncode == 1


async def publish_spans(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    """Raw records on a topic only the archive reads, the first with a payload jsonb refuses."""
    records = [(f"ro-{i % 97}".encode(), b'{"name": "\\u0000"}' if i == 0 else b'{"n": %d}' % i) for i in range(count)]
    async with AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5) as producer:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    return records


async def read_topic(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 60
        while len(out) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                out += [(r.key, r.value) for r in batch]
        return out
    finally:
        await consumer.stop()


def test_records_the_archive_had_not_stored_when_the_stack_stopped_are_restored_too(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="tansu")
    bootstrap = f"127.0.0.1:{env['AGL_KAFKA_PORT']}"
    topic = SPANS.full_name("")
    up = Up(env)
    # Stop right after the last write: the archive is still behind when the stop begins, and Tansu forgets its
    # log when it stops, so the stop must let the archive catch up first.
    records = asyncio.run(publish_spans(bootstrap, topic, 30_000))
    code, output = up.interrupt()
    assert code == 0, output
    assert "did not catch up" not in output, output

    up = Up(env)
    output = "".join(up.output)
    assert "restored" in output and "LOST" not in output, output
    restored = asyncio.run(read_topic(bootstrap, topic, len(records)))
    assert sorted(restored) == sorted(records), "every record, exactly once (each landed at its archived offset)"
    assert up.interrupt()[0] == 0
