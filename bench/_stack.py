"""The services a benchmark runs against, started once here for every benchmark.

A benchmark starts the embedded stack itself unless ``AGL_`` settings point elsewhere:

- :func:`services`: a broker and PostgreSQL (``AGL_KAFKA_BOOTSTRAP`` / ``AGL_DATABASE_URL`` when set), for
  benchmarks that drive the engine or the publisher in-process;
- :func:`running_stack`: the whole stack as ``agl up`` runs it (API, projections, watchdog), on free ports, for
  benchmarks that go through the HTTP API.

Importing this module sets ``AGL_AUTH=off`` unless it is set (see below).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import psycopg

from agl.config import KAFKA_VERSION, BrokerChoice, Settings
from agl.stack._process import free_port, free_ports
from agl.stack.brokers import ApacheKafka, Tansu, java_available
from agl.stack.postgres import EmbeddedPostgres
from agl.stack.stack import Stack
from producers.admin import ensure_topics
from projections.migrations import migrate_core
from schemas.topics import TOPICS

# The API processes a benchmark starts (and their clients, runners and agents) run without API keys unless
# AGL_AUTH says otherwise: the benchmarks measure the pipeline, and a verified key costs a request one cached
# lookup. Set AGL_AUTH=keys to measure with them (the clients then need AGL_API_KEY).
os.environ.setdefault("AGL_AUTH", "off")

REPO = Path(__file__).resolve().parents[1]
KAFKA_LIBS = REPO / ".agl" / "cache" / f"kafka-{KAFKA_VERSION}"


@contextlib.asynccontextmanager
async def services(choice: str, workdir: Path) -> AsyncIterator[tuple[str, str, str]]:
    """(bootstrap, database_url, broker kind): from the environment, or started in ``workdir`` and stopped on exit.

    ``choice`` is ``auto`` (Apache Kafka when Java is here, else Tansu), ``kafka`` or ``tansu``. PostgreSQL runs
    without fsync: a benchmark measures the software, not this machine's disk.
    """
    async with contextlib.AsyncExitStack() as stack:
        bootstrap, kind = os.environ.get("AGL_KAFKA_BOOTSTRAP"), "external"
        if not bootstrap:
            use_kafka = choice == "kafka" or (choice == "auto" and java_available())
            broker: ApacheKafka | Tansu = (
                ApacheKafka(
                    data_dir=workdir / "kafka",
                    libs_dir=KAFKA_LIBS,
                    port=(ports := free_ports(2))[0],
                    controller_port=ports[1],
                )
                if use_kafka
                else Tansu(data_dir=workdir / "tansu", port=free_port())
            )
            await broker.start(180)
            stack.push_async_callback(broker.stop)
            bootstrap, kind = broker.info.bootstrap, broker.info.kind
        database_url = await stack.enter_async_context(database(workdir))
        yield bootstrap, database_url, kind


@contextlib.asynccontextmanager
async def database(workdir: Path) -> AsyncIterator[str]:
    """``AGL_DATABASE_URL``, or PostgreSQL started in ``workdir`` (without fsync, see :func:`services`) and
    stopped on exit."""
    url = os.environ.get("AGL_DATABASE_URL")
    if url:
        yield url
        return
    postgres = EmbeddedPostgres(data_dir=workdir / "postgres", port=free_port(), durable=False)
    await postgres.start(60)
    try:
        yield postgres.local_url()
    finally:
        await postgres.stop()


@contextlib.asynccontextmanager
async def temporary_services(choice: str) -> AsyncIterator[tuple[str, str, str]]:
    """:func:`services` in a temporary directory, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="agl-bench-") as tmp:
        async with services(choice, Path(tmp)) as started:
            yield started


@dataclass(frozen=True)
class Prepared:
    """Services ready for a benchmark's events: topics under a fresh prefix, the core migrations run."""

    bootstrap: str
    database_url: str
    kind: str
    prefix: str


@contextlib.asynccontextmanager
async def prepared_services(choice: str) -> AsyncIterator[Prepared]:
    """:func:`temporary_services` with this run's topics created (a prefix of its own) and the core migrations run."""
    async with temporary_services(choice) as (bootstrap, database_url, kind):
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        await ensure_topics(bootstrap, TOPICS, prefix=prefix)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await migrate_core(conn)
        yield Prepared(bootstrap, database_url, kind, prefix)


@contextlib.asynccontextmanager
async def running_stack(broker: str, workdir: Path) -> AsyncIterator[str]:
    """The stack `agl up` runs, on free ports in ``workdir``; yields the API's URL.

    Nothing a benchmark runs calls an LLM: an endpoint of our own keeps `agl up` from starting llama.cpp.
    ``AGL_KAFKA_BOOTSTRAP`` / ``AGL_DATABASE_URL`` in the environment are used as `agl up` uses them.
    """
    kafka_port, controller_port, postgres_port, api_port = free_ports(4)
    settings = Settings(
        data_dir=workdir,
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        kafka_libs_dir=KAFKA_LIBS,
        postgres_port=postgres_port,
        api_port=api_port,
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        llm_endpoint="http://127.0.0.1:9/v1",
        llm_model="bench-noop",
        startup_timeout_s=180,
    )
    stack = Stack(settings, broker=None if broker == "auto" else cast("BrokerChoice", broker))
    await stack.start()
    try:
        assert stack.api_url is not None
        print(f"stack: broker {stack.broker_choice}, API {stack.api_url}", flush=True)
        yield stack.api_url
    finally:
        await stack.stop()
