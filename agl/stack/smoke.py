"""`agl smoke`: one record through the broker and one vector through PostgreSQL, end to end."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pgvector.psycopg import register_vector_async

from agl.errors import StackError
from agl.stack.probes import http_up
from agl.stack.state import StackLock, read_state, with_running_stack
from schemas.topics import SMOKE

if TYPE_CHECKING:
    from agl.config import Settings


async def kafka_round_trip(bootstrap: str, topic: str) -> float:
    """Publish one record and read that very record back by its offset; return the seconds it took."""
    marker = str(uuid.uuid4())
    t0 = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, orjson.dumps({"smoke": marker}), key=marker.encode())
    finally:
        await producer.stop()
    tp = TopicPartition(topic, meta.partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        # Let the reset that assignment starts finish first, or it could move the position after our seek.
        await consumer.position(tp)
        consumer.seek(tp, meta.offset)
        batch = await consumer.getmany(tp, timeout_ms=10_000, max_records=1)
    finally:
        await consumer.stop()
    records = batch.get(tp, [])
    if not records or orjson.loads(records[0].value) != {"smoke": marker}:
        raise StackError(f"smoke: the record written at {topic}[{meta.partition}]@{meta.offset} did not read back")
    return time.monotonic() - t0


async def vector_round_trip(database_url: str) -> list[float]:
    """Store a 3-d vector in a temporary table and read it back through pgvector's adapter."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await register_vector_async(conn)
        await conn.execute("CREATE TEMP TABLE smoke_vectors (id int, embedding vector(3))")
        await conn.execute("INSERT INTO smoke_vectors VALUES (1, '[1,2,3]')")
        cur = await conn.execute("SELECT embedding FROM smoke_vectors ORDER BY embedding <-> '[1,2,4]' LIMIT 1")
        row = await cur.fetchone()
    if row is None:
        raise StackError("smoke: the vector did not read back")
    return [float(x) for x in row[0].to_list()]


async def smoke(settings: Settings) -> str:
    state = read_state(settings.data_dir) if StackLock(settings.data_dir).held_by_someone() else None
    resolved = with_running_stack(settings)
    bootstrap, database_url = resolved.kafka_bootstrap, resolved.database_url
    assert bootstrap is not None and database_url is not None
    seconds = await kafka_round_trip(bootstrap, SMOKE.full_name(settings.topic_prefix))
    vector = await vector_round_trip(database_url)
    parts = [f"kafka round trip {seconds * 1000:.0f} ms", f"vector {vector} read back"]
    if state and state.api_url:
        # Readiness gathers every projection's lag from the broker: seconds on a busy machine, not an outage.
        problem = await http_up(f"{state.api_url}/readyz", timeout=20)
        if problem:
            raise StackError(f"smoke: the API at {state.api_url} is not ready: {problem}")
        parts.append("api ready")
    return "smoke: ok (" + ", ".join(parts) + ")"
