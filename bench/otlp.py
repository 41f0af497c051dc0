"""OTLP ingest: spans per second accepted by ``POST /v1/traces`` into Kafka, beside the raw publisher in the same run.

Workload: batches of 512 spans as the stock OpenTelemetry exporter sends them (protobuf, gzip), each span an LLM
call with a dozen GenAI attributes and a 200-id token array, the batch's rollout and attempt named by resource
attributes (as Agent Lightning's tracer does), without sequence ids (the server numbers them). ``otlp_sps`` is end
to end: `agl api` in its own process decompresses, decodes, maps, numbers the spans in PostgreSQL, commits them to
the outbox and answers once Kafka has them (acks=all). ``publisher_sps`` is the floor of any ingest: the same spans
(decoded once beforehand by the receiver's own mapping) published with the ``EventPublisher``.

    .venv/bin/python bench/otlp.py [--spans 50000] [--concurrency 4] [--broker auto|kafka|tansu]

Starts its own broker and PostgreSQL unless AGL_KAFKA_BOOTSTRAP / AGL_DATABASE_URL are set. Last line:
``otlp_sps=<n> publisher_sps=<n> ratio=<otlp/publisher>``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import sys
import time
import uuid
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import prepared_services
from bench.publish import api_process, run_publisher
from producers.otlp_spans import map_request
from producers.publisher import EventPublisher
from schemas import SpanRecorded

BATCH = 512
T0_NS = 1_767_225_600 * 10**9  # 2026-01-01


def _kv(key: str, value: str | int | list[int]) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=v) for v in value])))


def make_request(b: int) -> ExportTraceServiceRequest:
    """Batch ``b``: one rollout's attempt, 512 spans."""
    trace_id = uuid.UUID(int=b + 1).bytes
    spans = []
    for i in range(BATCH):
        start = T0_NS + (b * BATCH + i) * 1_000_000
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=((b << 20) | (i + 1)).to_bytes(8, "big"),
                name="openai.chat.completion",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start,
                end_time_unix_nano=start + 500_000,
                attributes=[
                    _kv("gen_ai.system", "openai"),
                    _kv("gen_ai.operation.name", "chat"),
                    _kv("gen_ai.request.model", "SmolLM2-135M-Instruct"),
                    _kv("gen_ai.response.id", f"chatcmpl-{b}-{i}"),
                    _kv("gen_ai.prompt.0.role", "user"),
                    _kv("gen_ai.prompt.0.content", f"What is {i} + {b}?"),
                    _kv("gen_ai.completion.0.role", "assistant"),
                    _kv("gen_ai.completion.0.content", str(i + b)),
                    _kv("gen_ai.usage.input_tokens", 200),
                    _kv("gen_ai.usage.output_tokens", 4),
                    _kv("prompt_token_ids", list(range(i, i + 200))),
                    _kv("response_token_ids", [1, 2, 3, 2]),
                ],
            )
        )
    resource_attributes = [
        _kv("service.name", "bench"),
        _kv("agentlightning.rollout_id", f"ro-otlp-{b:06d}"),
        _kv("agentlightning.attempt_id", f"at-otlp-{b:06d}"),
    ]
    resource = ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])
    resource.resource.attributes.extend(resource_attributes)
    return ExportTraceServiceRequest(resource_spans=[resource])


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Spans/s of every body POSTed (gzip protobuf), ``concurrency`` requests in flight, each answered 200 in full."""
    queue = list(reversed(bodies))
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            body = queue.pop()
            response = await client.post("/v1/traces", content=body, headers=headers)
            if response.status_code != 200 or response.content:  # an empty 200 is full success
                raise SystemExit(f"OTLP answered {response.status_code}: {response.content[:200]!r}")

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return len(bodies) * BATCH / (time.perf_counter() - t0)


def published_events(requests: list[ExportTraceServiceRequest]) -> list[SpanRecorded]:
    """The events the receiver makes of the same requests, numbered as the server would number them."""
    events = []
    for request in requests:
        mapped = map_request(request, envelope={"source": "/bench"}, max_event_bytes=1 << 20)
        assert not mapped.rejected and not mapped.unattached
        for n, draft in enumerate(mapped.attached, start=1):
            events.append(draft.event.model_copy(update={"sequence_id": n}))
    return events


async def main_async(args: argparse.Namespace) -> None:
    batches = max(1, args.spans // BATCH)
    requests = [make_request(b) for b in range(batches)]
    bodies = [gzip.compress(r.SerializeToString(), compresslevel=6) for r in requests]
    print(f"workload: {batches} requests of {BATCH} spans, {sum(map(len, bodies)) / len(bodies) / 1024:.0f} KiB "
          f"gzipped each", flush=True)  # fmt: skip
    events = published_events(requests)
    async with prepared_services(args.broker) as ready:
        bootstrap, database_url, prefix = ready.bootstrap, ready.database_url, ready.prefix
        async with EventPublisher(bootstrap, topic_prefix=prefix) as publisher:
            await run_publisher(publisher, events[: min(len(events), 2000)])  # warm
            publisher_sps = await run_publisher(publisher, events)
        print(f"broker {ready.kind}: publisher {publisher_sps:,.0f} spans/s", flush=True)
        async with api_process(bootstrap, database_url, prefix) as url:
            warm = [gzip.compress(make_request(batches + k).SerializeToString()) for k in range(2)]
            await post_all(url, warm, 1)  # connections, first numbering; other rollouts than measured
            otlp_sps = await post_all(url, bodies, args.concurrency)
        print(f"OTLP: {otlp_sps:,.0f} spans/s accepted", flush=True)
    print(f"otlp_sps={otlp_sps:.0f} publisher_sps={publisher_sps:.0f} ratio={otlp_sps / publisher_sps:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--broker", choices=["auto", "kafka", "tansu"], default="auto")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
