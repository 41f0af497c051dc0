"""A rebuild loads the chunks without their HNSW index, builds it once after the catch-up, and answers as before."""

from __future__ import annotations

import asyncio
import base64
import functools
from typing import Any

import numpy as np
import psycopg
import pytest

from consumers.rebuild import Rebuild
from projections.base import Projection
from projections.errors import ProjectionDefinitionError
from projections.knowledge import knowledge_projection, vector_search
from projections.tracking import set_search_path
from schemas import ChunksEmbedded, DocumentDeleted, DocumentUpserted, EmbeddedChunk, Event
from schemas.topics import KNOWLEDGE
from tests.consumers.helpers import fetch_all, publish, running, wait_for_total
from tests.knowledge.helpers import worker_for

DIM = 16
MODEL = "recorded-16"
HNSW_OF = "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = 'knowledge_chunks_hnsw'"


def unit_rows(n: int, seed: int) -> np.ndarray[Any, Any]:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    unit: np.ndarray[Any, Any] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit


def recorded(document_id: str, vectors: np.ndarray[Any, Any]) -> ChunksEmbedded:
    chunks = tuple(
        EmbeddedChunk(chunk_index=i, start=0, end=9, text=f"chunk {i} of {document_id}",
                      vector=base64.b64encode(v.astype("<f4").tobytes()).decode())
        for i, v in enumerate(vectors)
    )  # fmt: skip
    return ChunksEmbedded(
        collection="kb", document_id=document_id, document_version=1, model_id=MODEL, dimension=DIM,
        chunker="chars:1200/200", part=0, parts=1, chunk_count=len(chunks), chunks=chunks,
    )  # fmt: skip


async def nearest(pg_url: str, schema: str, query: np.ndarray[Any, Any]) -> list[tuple[str, int]]:
    """The top 10 of ``schema`` through its HNSW index (sequential scans off, so a tiny table cannot avoid it)."""
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        await set_search_path(conn, schema, local=True)
        await conn.execute("SET LOCAL enable_seqscan = off")
        hits = await vector_search(conn, query, collection="kb", k=10, filter_={})
        return [(h.document_id, h.chunk_index) for h in hits]


@pytest.mark.kafka
@pytest.mark.pg
async def test_the_rebuilt_generation_gets_its_hnsw_index_after_loading_and_answers_alike(
    kafka_bootstrap, kafka_topics, pg_url
):
    vectors = unit_rows(30 * 5, seed=1)
    events: list[Event] = [
        event
        for d in range(30)
        for event in (
            DocumentUpserted(collection="kb", document_id=f"d{d:02d}", document_version=1, text="x"),
            recorded(f"d{d:02d}", vectors[d * 5 : d * 5 + 5]),
        )
    ]
    events.append(DocumentDeleted(collection="kb", document_id="d07"))
    await publish(kafka_bootstrap, kafka_topics, events)
    projection = knowledge_projection(MODEL, DIM, name="knowledge_t8")
    async with running(worker_for(projection, kafka_bootstrap, pg_url, kafka_topics)):
        await wait_for_total(pg_url, "knowledge_t8_g1", len(events))
        # A generation created live has the index from the start: its rows go through it one by one.
        live_index = await fetch_all(pg_url, HNSW_OF, ("knowledge_t8_g1",))
        assert len(live_index) == 1 and "USING hnsw" in live_index[0][0]

        # Stopped after its first batch, and resumed batch by batch until the building generation holds chunks
        # (a broker may hand the first batch out of one partition's upserts only: Tansu does): no HNSW index yet.
        for _ in range(10):
            stop = asyncio.Event()
            interrupted = Rebuild(
                projection, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, batch_size=10,
                on_progress=functools.partial(stopper, stop),
            )  # fmt: skip
            assert not (await interrupted.run(stop)).switched
            loaded = await fetch_all(pg_url, "SELECT count(*) > 0 FROM knowledge_t8_g2.knowledge_chunks")
            if loaded == [(True,)]:
                break
        assert loaded == [(True,)]
        assert await fetch_all(pg_url, HNSW_OF, ("knowledge_t8_g2",)) == []

        result = await Rebuild(
            projection, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, drop_old=False
        ).run(asyncio.Event())
    assert result.resumed and result.switched
    # Same rows as the live generation (the engine compared them), the same index, the same answers.
    assert result.checksums and all(new == old for new, old in result.checksums.values()), result.checksums
    assert result.checksums["knowledge_chunks"][0].startswith("145:")  # 30 documents of 5 chunks, one deleted
    rebuilt_index = await fetch_all(pg_url, HNSW_OF, ("knowledge_t8_g2",))
    assert [(d.replace("knowledge_t8_g2", "g"),) for (d,) in rebuilt_index] == [
        (d.replace("knowledge_t8_g1", "g"),) for (d,) in live_index
    ]
    valid = await fetch_all(
        pg_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'knowledge_t8_g2.knowledge_chunks_hnsw'::regclass"
    )
    assert valid == [(True,)]
    for query in unit_rows(5, seed=2):
        answer = await nearest(pg_url, "knowledge_t8_g2", query)
        assert len(answer) == 10 and all(doc != "d07" for doc, _ in answer)
        assert answer == await nearest(pg_url, "knowledge_t8_g1", query)
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        await conn.execute("SET LOCAL enable_seqscan = off")
        cur = await conn.execute(
            "EXPLAIN SELECT 1 FROM knowledge_t8_g2.knowledge_chunks ORDER BY embedding <=> %s::vector LIMIT 10",
            (str([0.25] * DIM).replace(" ", ""),),
        )
        plan = [line for (line,) in await cur.fetchall()]
    assert any("Index Scan using knowledge_chunks_hnsw" in line for line in plan), plan


def test_a_deferred_index_must_be_safe_to_run_twice():
    with pytest.raises(ProjectionDefinitionError, match="IF NOT EXISTS"):
        Projection(
            name="p", version=1, topics=(KNOWLEDGE,), apply=lambda envelopes, conn: asyncio.sleep(0),
            deferred_indexes=("CREATE INDEX p_i ON t (a)",),
        )  # fmt: skip


def stopper(stop: asyncio.Event, _: object) -> None:
    """A rebuild's progress callback that stops it (bound to its own event)."""
    stop.set()
