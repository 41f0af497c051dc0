"""Running the knowledge indexer and projection in a test, against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from consumers.knowledge_indexer import IndexerConfig, KnowledgeIndexer
from consumers.worker import ProjectionWorker
from knowledge.embedders import Embedder
from projections.base import Projection
from tests.consumers.helpers import fetch_all


@contextlib.asynccontextmanager
async def indexing(embedder: Embedder, kafka_bootstrap: str, pg_url: str, prefix: str, **config: Any):
    indexer = KnowledgeIndexer(
        embedder, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, config=IndexerConfig(**config)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(indexer.run(stop))
    try:
        ready = asyncio.create_task(indexer.ready.wait())
        await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the indexer failed to start: raise its error
        yield indexer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def worker_for(projection: Projection, kafka_bootstrap: str, pg_url: str, prefix: str) -> ProjectionWorker:
    return ProjectionWorker(
        projection, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False
    )


async def wait_until(pg_url: str, query: str, expected: Any, params: Any = None, timeout: float = 60.0) -> None:
    """Poll ``query`` (one row, one column) until it returns ``expected``."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await fetch_all(pg_url, query, params)
        got = rows[0][0] if rows else None
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{query} gave {got!r}, waited for {expected!r}")
        await asyncio.sleep(0.1)
