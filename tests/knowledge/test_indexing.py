"""Documents become chunks with recorded vectors; updates supersede, deletes remove, rebuilds never re-embed."""

from __future__ import annotations

import pytest

from knowledge.embedders import HashingEmbedder
from projections.knowledge import knowledge_projection
from schemas import DocumentDeleted, DocumentUpserted
from tests.consumers.helpers import fetch_all, publish, running
from tests.knowledge.helpers import indexing, wait_until, worker_for

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

LONG = "# Kafka\n\n" + " ".join(f"Sentence {i} about the log and its partitions." for i in range(60))


def doc(document_id: str, version: int, text: str, **kw) -> DocumentUpserted:
    return DocumentUpserted(collection="docs", document_id=document_id, document_version=version, text=text, **kw)


async def test_index_update_delete_and_rebuild_without_embedding(kafka_bootstrap, kafka_topics, pg_url):
    embedder = HashingEmbedder(64)
    live = knowledge_projection(embedder.model_id, 64, name="knowledge_t1")
    await publish(
        kafka_bootstrap,
        kafka_topics,
        [
            doc("a", 1, LONG, metadata={"lang": "en"}),
            doc("b", 1, "PostgreSQL stores the read models."),
            doc("c", 1, "to be deleted"),
        ],
    )
    async with (
        indexing(embedder, kafka_bootstrap, pg_url, kafka_topics, chunk_size=300, chunk_overlap=50) as indexer,
        running(worker_for(live, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        await wait_until(pg_url, "SELECT count(DISTINCT document_id) FROM knowledge_t1_g1.knowledge_chunks", 3)
        chunks_a = await fetch_all(
            pg_url,
            "SELECT chunk_index, heading, document_version, metadata FROM knowledge_t1_g1.knowledge_chunks "
            "WHERE document_id = 'a' ORDER BY chunk_index",
        )
        assert len(chunks_a) > 5  # cut by the configured size
        assert {(h, v) for _, h, v, _ in chunks_a} == {("Kafka", 1)}
        assert chunks_a[0][3] == {"lang": "en"}

        # A new version replaces the chunks; a delete removes them; the old version's chunks never come back.
        await publish(
            kafka_bootstrap,
            kafka_topics,
            [doc("a", 2, "Short now."), DocumentDeleted(collection="docs", document_id="c")],
        )
        await wait_until(
            pg_url,
            "SELECT string_agg(text, '|') FROM knowledge_t1_g1.knowledge_chunks WHERE document_id = 'a'",
            "Short now.",
        )
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_t1_g1.knowledge_chunks WHERE document_id = 'c'", 0)
        await wait_until(
            pg_url, "SELECT indexed_version FROM knowledge_t1_g1.knowledge_documents WHERE document_id='a'", 2
        )
        deleted = await fetch_all(
            pg_url, "SELECT deleted FROM knowledge_t1_g1.knowledge_documents WHERE document_id='c'"
        )
        assert deleted == [(True,)]
        assert indexer.dead_lettered == 0
    embedded_so_far = embedder.calls

    # A rebuild from the log (a fresh projection reading the same history) replays the recorded vectors.
    rebuilt = knowledge_projection(embedder.model_id, 64, name="knowledge_t1r")
    async with running(worker_for(rebuilt, kafka_bootstrap, pg_url, kafka_topics)):
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_t1r_g1.knowledge_chunks", 2)
        await wait_until(
            pg_url,
            "SELECT count(*) FROM knowledge_t1r_g1.knowledge_chunks r JOIN knowledge_t1_g1.knowledge_chunks l "
            "USING (document_id, chunk_index) WHERE r.embedding = l.embedding AND r.text = l.text",
            2,
        )
    assert embedder.calls == embedded_so_far


async def test_a_new_model_is_a_new_projection_version_that_reembeds(kafka_bootstrap, kafka_topics, pg_url):
    old, new = HashingEmbedder(64), HashingEmbedder(32)
    await publish(kafka_bootstrap, kafka_topics, [doc("a", 1, "one document about vectors")])
    v1 = knowledge_projection(old.model_id, 64, version=1, name="knowledge_t2")
    async with (
        indexing(old, kafka_bootstrap, pg_url, kafka_topics),
        running(worker_for(v1, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_t2_g1.knowledge_chunks", 1)
    # The new model's indexer reads every document again (its own group) and records new events; a projection
    # of the new model indexes only those, while v1 keeps its 64-dimension vectors.
    v2 = knowledge_projection(new.model_id, 32, version=1, name="knowledge_t2b")
    async with (
        indexing(new, kafka_bootstrap, pg_url, kafka_topics),
        running(worker_for(v2, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        await wait_until(pg_url, "SELECT vector_dims(embedding) FROM knowledge_t2b_g1.knowledge_chunks", 32)
    assert new.texts_embedded == 1
    assert await fetch_all(pg_url, "SELECT vector_dims(embedding) FROM knowledge_t2_g1.knowledge_chunks") == [(64,)]
    assert await fetch_all(pg_url, "SELECT model_id FROM knowledge_t2b_g1.knowledge_index") == [("hashing-32",)]


async def test_an_embedding_recorded_by_the_client_with_the_same_model_is_used_as_is(
    kafka_bootstrap, kafka_topics, pg_url
):
    embedder = HashingEmbedder(4)
    projection = knowledge_projection(embedder.model_id, 4, name="knowledge_t6")
    given = (0.5, 0.5, 0.5, 0.5)
    await publish(kafka_bootstrap, kafka_topics, [
        doc("mine", 1, "short text", embedding=given, embedding_model="hashing-4"),
        doc("other", 1, "short text", embedding=given, embedding_model="another-model"),  # not ours: embedded
    ])  # fmt: skip
    async with (
        indexing(embedder, kafka_bootstrap, pg_url, kafka_topics),
        running(worker_for(projection, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_t6_g1.knowledge_chunks", 2)
    rows = await fetch_all(
        pg_url, "SELECT document_id, embedding::text FROM knowledge_t6_g1.knowledge_chunks ORDER BY 1"
    )
    assert rows[0] == ("mine", "[0.5,0.5,0.5,0.5]")
    assert rows[1][1] != "[0.5,0.5,0.5,0.5]"
    assert embedder.texts_embedded == 1
