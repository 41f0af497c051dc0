"""Records through the real broker, vectors through the real PostgreSQL."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pgvector.psycopg import register_vector_async

from agl.stack.smoke import kafka_round_trip, vector_round_trip
from schemas.topics import ROLLOUTS, SMOKE

pytestmark = pytest.mark.kafka


async def test_keyed_records_with_headers_round_trip_in_order(kafka_bootstrap, kafka_topics):
    topic = ROLLOUTS.full_name(kafka_topics)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        metas = [
            await producer.send_and_wait(
                topic, orjson.dumps({"n": n}), key=b"ro-1", headers=[("ce_type", b"test.sent")]
            )
            for n in range(20)
        ]
    finally:
        await producer.stop()
    partitions = {m.partition for m in metas}
    assert len(partitions) == 1, "one key must land in one partition"
    tp = TopicPartition(topic, partitions.pop())
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        got: list[Any] = []
        while len(got) < 20:
            batch = await consumer.getmany(tp, timeout_ms=10_000)
            assert batch, "timed out reading back"
            got.extend(batch[tp])
    finally:
        await consumer.stop()
    assert [orjson.loads(r.value)["n"] for r in got] == list(range(20))
    assert all(r.key == b"ro-1" and dict(r.headers)["ce_type"] == b"test.sent" for r in got)


async def test_smoke_round_trip_reads_back_its_own_record(kafka_bootstrap, kafka_topics):
    topic = SMOKE.full_name(kafka_topics)
    # Each round trip seeks to the offset its own record got, so two in a row read different records.
    await kafka_round_trip(kafka_bootstrap, topic)
    await kafka_round_trip(kafka_bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        batch = await consumer.getmany(tp, timeout_ms=10_000)
    finally:
        await consumer.stop()
    markers = {orjson.loads(r.value)["smoke"] for r in batch.get(tp, [])}
    assert len(markers) == 2


@pytest.mark.pg
async def test_vector_column_round_trips(pg_conn):
    await register_vector_async(pg_conn)
    await pg_conn.execute("CREATE TABLE docs (id int PRIMARY KEY, embedding vector(4))")
    await pg_conn.execute("INSERT INTO docs VALUES (1, '[1,0,0,0]'), (2, '[0,1,0,0]'), (3, '[0,0,1,0]')")
    cur = await pg_conn.execute("SELECT id, embedding FROM docs ORDER BY embedding <=> '[0.1,0.9,0,0]' LIMIT 1")
    row = await cur.fetchone()
    assert row[0] == 2
    assert row[1].to_list() == [0.0, 1.0, 0.0, 0.0]


@pytest.mark.pg
async def test_vector_round_trip_helper(pg_url):
    assert await vector_round_trip(pg_url) == [1.0, 2.0, 3.0]
