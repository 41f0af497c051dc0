"""Events per second through the EventPublisher, through the HTTP command API, and through a raw aiokafka producer.

All three send the same span events (~600 B of JSON each, 100 rollouts) to the same topic, acks=all, in the same
run. The raw producer is plain aiokafka with the publisher's own settings (``PublisherConfig``: linger, batch size,
compression, request size, and idempotence as the publisher detected it), created and warmed once like the
publisher, sending on the library's fastest path (its own batches per partition). It is measured twice: handed the
already-encoded records (``raw_eps``: transport only), and encoding each event with the one codec call inside the
timing (``raw_encoding_eps``: the least work any publisher of these events must do). The publisher also bounds what
is in flight and computes positions. Rounds alternate; the best of each is reported.
The HTTP figure is end to end: JSON batches POSTed to `agl api` running in its own process, without
sequence ids, so the server numbers the spans as it does for the SDK.

Starts its own broker (Apache Kafka when Java and Maven are present, else Tansu; `--broker` chooses) and
PostgreSQL on free ports in a temporary directory, unless AGL_KAFKA_BOOTSTRAP / AGL_DATABASE_URL are set.
The last line is: publisher_eps=<n> http_eps=<n> raw_eps=<n> raw_encoding_eps=<n> publisher_ratio=<publisher/raw>
ratio_vs_raw_encoding=<publisher/raw_encoding>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agl.stack._process import free_port
from bench._stack import services
from producers.admin import ensure_topics
from producers.publisher import EventPublisher, Record
from schemas import SpanRecorded
from schemas.codec import encode_headers, encode_value
from schemas.topics import TOPICS

REPO = Path(__file__).resolve().parents[1]
JSON = {"content-type": "application/json"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=60_000, help="events per publisher / raw run")
    parser.add_argument("--http-events", type=int, default=20_000, help="events sent through the HTTP API")
    parser.add_argument("--http-batch", type=int, default=500, help="spans per POST /v1/spans")
    parser.add_argument("--http-concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is reported")
    parser.add_argument("--broker", choices=["auto", "kafka", "tansu"], default="auto")
    return parser.parse_args()


def make_spans(count: int) -> list[SpanRecorded]:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        SpanRecorded(
            rollout_id=f"ro-bench-{i % 100}",
            attempt_id="at-1",
            sequence_id=i,
            trace_id=uuid.uuid4().hex,
            span_id=uuid.uuid4().hex[:16],
            name="openai.chat.completion",
            kind="CLIENT",
            start_time=start,
            end_time=start,
            attributes={"gen_ai.response.id": f"chatcmpl-{i}", "gen_ai.usage.total_tokens": 321, "note": "x" * 120},
            source="/bench",
        )
        for i in range(count)
    ]


def raw_producer(bootstrap: str, publisher: EventPublisher) -> AIOKafkaProducer:
    """Plain aiokafka, configured as the publisher's producer is (``producers/publisher.py``)."""
    config = publisher.config
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=bool(publisher.idempotent),
        linger_ms=config.linger_ms,
        max_batch_size=config.max_batch_size,
        compression_type=config.compression_type,
        max_request_size=config.max_request_size,
    )


async def run_raw(producer: AIOKafkaProducer, records: list[Record]) -> float:
    """The library's fastest path: aiokafka's own batches (``create_batch`` / ``send_batch``), filled per partition,
    the partition of each key chosen once by aiokafka's default partitioner (murmur2), every batch awaited at the
    end."""
    t0 = time.perf_counter()
    partition_of: dict[tuple[str, bytes | None], int] = {}
    open_batches: dict[tuple[str, int], Any] = {}
    futures = []
    for topic, key, value, headers in records:
        partition = partition_of.get((topic, key))
        if partition is None:
            partitions = sorted(await producer.partitions_for(topic))
            partition = partition_of[(topic, key)] = DefaultPartitioner()(key, partitions, partitions)
        batch = open_batches.get((topic, partition))
        if batch is None:
            batch = open_batches[(topic, partition)] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full: send it
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[(topic, partition)] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=headers)
    for (topic, partition), batch in open_batches.items():
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)
    return len(records) / (time.perf_counter() - t0)


async def run_raw_encoding(producer: AIOKafkaProducer, topic_of: Any, events: list[SpanRecorded]) -> float:
    """The same fastest path, paying for the encoding as the publisher must: the one codec call per event
    (pydantic-core straight to JSON, the same bytes and headers), timed with the sending."""
    t0 = time.perf_counter()
    records = [(topic_of(e), e.key(), encode_value(e), encode_headers(e)) for e in events]
    await run_raw(producer, records)
    return len(events) / (time.perf_counter() - t0)


async def run_publisher(publisher: EventPublisher, events: list[SpanRecorded]) -> float:
    t0 = time.perf_counter()
    positions = await publisher.publish_many(events)
    elapsed = time.perf_counter() - t0
    assert len(positions) == len(events)
    return len(events) / elapsed


@contextlib.asynccontextmanager
async def api_process(bootstrap: str, database_url: str, prefix: str) -> AsyncIterator[str]:
    """`agl api` in its own process, as `agl up` runs it."""
    port = free_port()
    env = os.environ | {
        "AGL_KAFKA_BOOTSTRAP": bootstrap,
        "AGL_DATABASE_URL": database_url,
        "AGL_TOPIC_PREFIX": prefix,
        "AGL_API_PORT": str(port),
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "agl", "api", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        await proc.wait()


async def run_http(url: str, events: list[SpanRecorded], batch: int, concurrency: int) -> float:
    fields = set(SpanRecorded.model_fields) - {"event_id", "type", "version", "occurred_at", "source"}
    # Without sequence_id: the server numbers the spans in PostgreSQL, as it does for the SDK.
    fields -= {"correlation_id", "causation_id", "sequence_id"}
    bodies = [
        orjson.dumps([e.model_dump(mode="json", include=fields) for e in events[i : i + batch]])
        for i in range(0, len(events), batch)
    ]
    queue = list(reversed(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def worker() -> None:
            while queue:
                response = await client.post(
                    "/v1/spans", content=queue.pop(), headers={"content-type": "application/json"}
                )
                assert response.status_code == 202, response.text

        # Warm-up: the first request opens the pool and the producer's connections.
        assert (await client.post("/v1/spans", content=queue.pop(), headers=JSON)).status_code == 202
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return (len(bodies) - 1) * batch / elapsed


async def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="agl-bench-"))
    try:
        async with services(args.broker, workdir) as (bootstrap, database_url, kind):
            prefix = f"bench{uuid.uuid4().hex[:8]}."
            await ensure_topics(bootstrap, TOPICS, prefix=prefix)
            events = make_spans(args.events)
            raw, raw_enc, pub = [], [], []
            async with EventPublisher(bootstrap, topic_prefix=prefix) as publisher:
                records = [publisher.record_of(e) for e in events]  # encoded beforehand: raw pays no encoding
                by_type = {type(e): publisher.record_of(e)[0] for e in events[:1]}

                def topic_of(event: SpanRecorded) -> str:
                    return by_type[type(event)]

                async with raw_producer(bootstrap, publisher) as producer:
                    # Warm-up of both: connections, metadata, the topic's partition leaders.
                    await run_publisher(publisher, events[:2000])
                    await run_raw(producer, records[:2000])
                    for _ in range(args.rounds):
                        raw.append(await run_raw(producer, records))
                        raw_enc.append(await run_raw_encoding(producer, topic_of, events))
                        pub.append(await run_publisher(publisher, events))
                        print(
                            f"round: raw {raw[-1]:,.0f}/s  raw+encoding {raw_enc[-1]:,.0f}/s  "
                            f"publisher {pub[-1]:,.0f}/s",
                            flush=True,
                        )
            async with api_process(bootstrap, database_url, prefix) as url:
                http = await run_http(url, make_spans(args.http_events), args.http_batch, args.http_concurrency)
            print(f"broker {kind}; {args.events} events x {args.rounds} rounds; http {args.http_events} events")
            print(
                f"publisher_eps={max(pub):.0f} http_eps={http:.0f} raw_eps={max(raw):.0f} "
                f"raw_encoding_eps={max(raw_enc):.0f} publisher_ratio={max(pub) / max(raw):.2f} "
                f"ratio_vs_raw_encoding={max(pub) / max(raw_enc):.2f}"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
