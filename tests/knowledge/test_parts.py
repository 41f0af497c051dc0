"""A document version too large for one event arrives in parts; its chunks replace the old ones only when all are in."""

from __future__ import annotations

import pytest

from knowledge.embedders import HashingEmbedder, vector_to_b64
from projections.knowledge import knowledge_projection
from schemas import ChunksEmbedded, DocumentUpserted, EmbeddedChunk
from tests.consumers.helpers import fetch_all, publish, running
from tests.knowledge.helpers import indexing, wait_until, worker_for

pytestmark = [pytest.mark.kafka, pytest.mark.pg]
BIG = "\n\n".join(f"Paragraph {i}: " + "words of a long manual " * 12 for i in range(40))


def part(version: int, n: int, parts: int, texts: list[str]) -> ChunksEmbedded:
    embedder = HashingEmbedder(16)
    chunks = tuple(
        EmbeddedChunk(chunk_index=n * 10 + i, start=0, end=len(t), text=t, vector=vector_to_b64(embedder._one(t)))
        for i, t in enumerate(texts)
    )
    return ChunksEmbedded(
        collection="c", document_id="manual", document_version=version, model_id="hashing-16", dimension=16,
        chunker="test", part=n, parts=parts, chunk_count=2 * len(texts), chunks=chunks,
    )  # fmt: skip


async def test_the_indexer_splits_a_large_document_and_the_projection_assembles_it(
    kafka_bootstrap, kafka_topics, pg_url
):
    embedder = HashingEmbedder(16)
    projection = knowledge_projection(embedder.model_id, 16, name="knowledge_t4")
    await publish(kafka_bootstrap, kafka_topics, [DocumentUpserted(collection="c", document_id="big",
                                                                   document_version=1, text=BIG)])  # fmt: skip
    async with (
        indexing(embedder, kafka_bootstrap, pg_url, kafka_topics, chunk_size=400, chunk_overlap=0,
                 max_part_bytes=4000) as indexer,
        running(worker_for(projection, kafka_bootstrap, pg_url, kafka_topics)),
    ):  # fmt: skip
        await wait_until(pg_url, "SELECT indexed_version FROM knowledge_t4_g1.knowledge_documents", 1)
        rows = await fetch_all(pg_url, "SELECT count(*), max(chunk_index) FROM knowledge_t4_g1.knowledge_chunks")
        documents = await fetch_all(pg_url, "SELECT chunk_count FROM knowledge_t4_g1.knowledge_documents")
        assert rows[0][0] == documents[0][0] == rows[0][1] + 1 >= 20
        assert indexer.indexed == 1


async def test_a_version_is_never_half_indexed(kafka_bootstrap, kafka_topics, pg_url):
    projection = knowledge_projection("hashing-16", 16, name="knowledge_t5")
    count = "SELECT string_agg(text, ',' ORDER BY chunk_index) FROM knowledge_t5_g1.knowledge_chunks"
    async with running(worker_for(projection, kafka_bootstrap, pg_url, kafka_topics)):
        await publish(kafka_bootstrap, kafka_topics, [part(1, 0, 1, ["old a", "old b"])])
        await wait_until(pg_url, count, "old a,old b")
        # Part 1 of 2 of version 2: held aside, version 1 keeps serving whole.
        await publish(kafka_bootstrap, kafka_topics, [part(2, 0, 2, ["new a"]), part(3, 1, 2, ["other"])])
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_t5_g1.knowledge_pending_parts", 2)
        assert (await fetch_all(pg_url, count)) == [("old a,old b",)]
        # The last part arrives: version 2 replaces version 1 in one transaction; a copy of a part changes nothing.
        await publish(kafka_bootstrap, kafka_topics, [part(2, 1, 2, ["new b"]), part(2, 1, 2, ["new b"])])
        await wait_until(pg_url, count, "new a,new b")
        # Parts of versions up to the indexed one are dropped; version 3's part still waits for its other half.
        pending = await fetch_all(pg_url, "SELECT document_version FROM knowledge_t5_g1.knowledge_pending_parts")
        assert pending == [(3,)]
