"""The knowledge read model: documents and their chunks, searchable by vector (pgvector HNSW) and full text.

It applies three events of ``agl.knowledge.v1``, all of one document on one partition (keyed by ``document_id``):

- ``knowledge.document_upserted``: the document row (text, metadata, newest version); its chunks come later.
- ``knowledge.chunks_embedded`` (derived by the indexer): the chunks of one version with their recorded vectors.
  It never calls an embedder, so a rebuild replays the vectors. A version replaces the chunks of an older one in
  the same transaction; a large version arrives in several parts, held aside until all are in, so a document is
  never half indexed. Chunks of an older version than the indexed one, or of a deleted version, are ignored.
- ``knowledge.document_deleted``: the document and its chunks go; versions up to the newest seen stay deleted
  (the indexer may still publish their chunks afterwards).

One projection serves one vector space: chunks of another ``model_id`` are skipped. Changing the model is a new
version of this projection (``AGL_KNOWLEDGE_INDEX_VERSION``): ``agl projections rebuild knowledge`` fills the
new generation from the new model's events while the old generation keeps serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pgvector.psycopg import register_vector_async
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from projections.base import Envelope, Projection
from projections.migrations import Migration, load_package_migrations
from schemas import ChunksEmbedded, DocumentDeleted, DocumentUpserted
from schemas.topics import KNOWLEDGE

if TYPE_CHECKING:
    from datetime import datetime

    from psycopg import AsyncConnection

TABLES = ("knowledge_documents", "knowledge_chunks", "knowledge_pending_parts")
_MODEL_MIGRATION = 100


def _model_migration(model_id: str, dim: int) -> Migration:
    # The HNSW index is not here but in HNSW_INDEX, which a rebuild builds once after loading the chunks.
    literal = "'" + model_id.replace("'", "''") + "'"
    sql = (
        f"ALTER TABLE knowledge_chunks ADD COLUMN embedding vector({int(dim)}) NOT NULL;\n"
        "CREATE TABLE knowledge_index (model_id text NOT NULL, dimension integer NOT NULL);\n"
        f"INSERT INTO knowledge_index VALUES ({literal}, {int(dim)});"
    )
    return Migration(_MODEL_MIGRATION, "model", sql)


#: m/ef: recall@10 0.96 at ef_search 40 on embedding-like vectors (the shared reference's measure; the harder
#: vectors of bench/knowledge.py need a larger ef_search). A deferred index: a rebuild builds it in one pass once the
#: chunks are in (20k chunks: 1.3 s of catch-up + 4.2 s of build, against 35 s of catch-up through the index), a
#: generation created live at once. Generations migrated before it was deferred have it, same name, from migration
#: 100.
HNSW_INDEX = (
    "CREATE INDEX IF NOT EXISTS knowledge_chunks_hnsw ON knowledge_chunks USING hnsw (embedding vector_cosine_ops) "
    "WITH (m = 16, ef_construction = 64)"
)
#: The columns of knowledge_chunks the projection writes, with their types for a binary COPY (``tsv`` is generated).
_CHUNK_COLUMNS = (
    ("collection", "text"),
    ("document_id", "text"),
    ("chunk_index", "int4"),
    ("document_version", "int8"),
    ("heading", "text"),
    ("text", "text"),
    ("start_char", "int4"),
    ("end_char", "int4"),
    ("metadata", "jsonb"),
    ("embedding", "vector"),
)
_COPY_CHUNKS = (
    f"COPY knowledge_chunks ({', '.join(name for name, _ in _CHUNK_COLUMNS)}) FROM STDIN WITH (FORMAT BINARY)"
)


@dataclass
class _Doc:
    latest_version: int
    indexed_version: int | None
    deleted_through: int
    deleted: bool


async def _load_doc(conn: AsyncConnection[Any], collection: str, document_id: str) -> _Doc | None:
    cur = await conn.execute(
        "SELECT latest_version, indexed_version, deleted_through, deleted FROM knowledge_documents "
        "WHERE collection = %s AND document_id = %s",
        (collection, document_id),
    )
    row = await cur.fetchone()
    return None if row is None else _Doc(*row)


async def _upserted(conn: AsyncConnection[Any], e: DocumentUpserted) -> None:
    await conn.execute(
        "INSERT INTO knowledge_documents (collection, document_id, latest_version, text, metadata, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (collection, document_id) DO UPDATE SET "
        "latest_version = EXCLUDED.latest_version, text = EXCLUDED.text, metadata = EXCLUDED.metadata, "
        "updated_at = EXCLUDED.updated_at, deleted = false "
        "WHERE knowledge_documents.latest_version < EXCLUDED.latest_version",
        (e.collection, e.document_id, e.document_version, e.text, Jsonb(e.metadata), e.occurred_at),
    )


async def _deleted(conn: AsyncConnection[Any], e: DocumentDeleted) -> None:
    key = (e.collection, e.document_id)
    await conn.execute(
        "UPDATE knowledge_documents SET deleted = true, deleted_through = latest_version, indexed_version = NULL, "
        "chunk_count = 0, updated_at = %s WHERE collection = %s AND document_id = %s",
        (e.occurred_at, *key),
    )
    await conn.execute("DELETE FROM knowledge_chunks WHERE collection = %s AND document_id = %s", key)
    await conn.execute("DELETE FROM knowledge_pending_parts WHERE collection = %s AND document_id = %s", key)


async def _replace_chunks(conn: AsyncConnection[Any], parts: Sequence[ChunksEmbedded]) -> None:
    """Swap the document's chunks for those of ``parts`` (one complete version), in the caller's transaction."""
    first = parts[0]
    key = (first.collection, first.document_id)
    await conn.execute("DELETE FROM knowledge_chunks WHERE collection = %s AND document_id = %s", key)
    metadata = Jsonb(first.metadata)
    # Binary: pgvector's text form costs ~200 us a row to format (a float at a time), its binary form ~3 us.
    async with conn.cursor() as cur, cur.copy(_COPY_CHUNKS) as copy:
        copy.set_types([kind for _, kind in _CHUNK_COLUMNS])
        for part in parts:
            for c in part.chunks:
                vector = np.frombuffer(_b64(c.vector), dtype="<f4")
                if vector.shape[0] != first.dimension:
                    raise ValueError(f"chunk {c.chunk_index} of {first.document_id} has {vector.shape[0]} dims")
                await copy.write_row(
                    (*key, c.chunk_index, first.document_version, c.heading, c.text, c.start, c.end, metadata,
                     vector)
                )  # fmt: skip
    await conn.execute(
        "UPDATE knowledge_documents SET indexed_version = %s, chunk_count = %s, model_id = %s, metadata = %s "
        "WHERE collection = %s AND document_id = %s",
        (first.document_version, first.chunk_count, first.model_id, metadata, *key),
    )
    await conn.execute(
        "DELETE FROM knowledge_pending_parts WHERE collection = %s AND document_id = %s AND document_version <= %s",
        (*key, first.document_version),
    )


def _b64(value: str) -> bytes:
    import base64

    return base64.b64decode(value)


async def _embedded(conn: AsyncConnection[Any], e: ChunksEmbedded, model_id: str) -> None:
    if e.model_id != model_id:
        return  # another vector space: another projection (version) indexes it
    doc = await _load_doc(conn, e.collection, e.document_id)
    if doc is not None and (
        e.document_version <= doc.deleted_through
        or (doc.indexed_version is not None and e.document_version <= doc.indexed_version)
    ):
        return  # superseded, deleted, or a copy of what is indexed
    if doc is None:
        # Chunks before their document (a log that starts mid-history): a row to hang them on.
        await conn.execute(
            "INSERT INTO knowledge_documents (collection, document_id, latest_version, text, metadata, updated_at) "
            "VALUES (%s, %s, %s, '', %s, %s)",
            (e.collection, e.document_id, e.document_version, Jsonb(e.metadata), e.occurred_at),
        )
    if e.parts == 1:
        await _replace_chunks(conn, [e])
        return
    await conn.execute(
        "INSERT INTO knowledge_pending_parts VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (e.collection, e.document_id, e.document_version, e.part, e.parts, Jsonb(e.model_dump(mode="json"))),
    )
    cur = await conn.execute(
        "SELECT event FROM knowledge_pending_parts WHERE collection = %s AND document_id = %s "
        "AND document_version = %s ORDER BY part",
        (e.collection, e.document_id, e.document_version),
    )
    stored = [ChunksEmbedded.model_validate(row[0]) for row in await cur.fetchall()]
    if len(stored) == e.parts:
        await _replace_chunks(conn, stored)


async def _vector_type(conn: AsyncConnection[Any]) -> None:
    """Teach the connection pgvector's type once (it costs a catalogue query, so not on every search)."""
    if conn.adapters.types.get("vector") is None:
        await register_vector_async(conn)


def _apply_for(model_id: str) -> Any:
    async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
        await _vector_type(conn)
        for envelope in envelopes:
            event = envelope.event
            if isinstance(event, DocumentUpserted):
                await _upserted(conn, event)
            elif isinstance(event, ChunksEmbedded):
                await _embedded(conn, event, model_id)
            elif isinstance(event, DocumentDeleted):
                await _deleted(conn, event)

    return apply


def knowledge_projection(model_id: str, dim: int, version: int = 1, name: str = "knowledge") -> Projection:
    """The knowledge read model of one embedding model (its vectors have ``dim`` dimensions)."""
    return Projection(
        name=name,
        version=version,
        topics=(KNOWLEDGE,),
        event_types=frozenset({DocumentUpserted, ChunksEmbedded, DocumentDeleted}),
        migrations=(*load_package_migrations("projections", "sql/knowledge"), _model_migration(model_id, dim)),
        apply=_apply_for(model_id),
        tables=TABLES,
        deferred_indexes=(HNSW_INDEX,),
        per_key_ordering=True,
        description=f"knowledge chunks embedded by {model_id} ({dim} dims): GET /v1/knowledge/search",
    )


def _configured() -> Projection:
    from core.config import Settings
    from knowledge.space import embedding_space

    settings = Settings()
    model_id, dim = embedding_space(settings)
    return knowledge_projection(model_id, dim, settings.knowledge_index_version)


PROJECTION = _configured()


# -- read queries (run with search_path at the active generation) --------------------------------------------------


@dataclass
class Hit:
    collection: str
    document_id: str
    document_version: int
    chunk_index: int
    heading: str
    text: str
    metadata: dict[str, Any]
    score: float
    vector_rank: int | None = None
    text_rank: int | None = None


@dataclass
class DocumentRow:
    collection: str
    document_id: str
    latest_version: int
    indexed_version: int | None
    deleted: bool
    metadata: dict[str, Any]
    chunk_count: int
    model_id: str | None
    updated_at: datetime
    text: str


async def index_model(conn: AsyncConnection[Any]) -> tuple[str, int]:
    cur = await conn.execute("SELECT model_id, dimension FROM knowledge_index")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


_HIT_COLS = "collection, document_id, document_version, chunk_index, heading, text, metadata"
#: Reciprocal rank fusion's constant (Cormack et al. 2009): damps the weight of the very first ranks.
RRF_K = 60


async def vector_search(
    conn: AsyncConnection[Any], query: np.ndarray[Any, Any], *, collection: str, k: int, filter_: dict[str, Any],
    ef_search: int = 100,
) -> list[Hit]:  # fmt: skip
    await _vector_type(conn)
    # ef_search above k keeps recall when a filter discards candidates (pgvector filters after the index scan).
    # One round trip for both settings; iterative scans keep filling k when the filter rejects candidates.
    await conn.execute(
        f"SET LOCAL hnsw.ef_search = {max(int(ef_search), k)}; SET LOCAL hnsw.iterative_scan = relaxed_order"
    )
    async with conn.cursor(row_factory=class_row(Hit)) as cur:
        await cur.execute(
            f"SELECT {_HIT_COLS}, 1 - (embedding <=> %(q)s) AS score FROM knowledge_chunks "  # noqa: S608
            "WHERE collection = %(c)s AND metadata @> %(f)s ORDER BY embedding <=> %(q)s LIMIT %(k)s",
            {"q": np.asarray(query, dtype=np.float32), "c": collection, "f": Jsonb(filter_), "k": k},
            # Never prepared: after five runs PostgreSQL may settle on a generic plan, which cannot see that the
            # filter matches every row; it then fetches them through the metadata index and sorts them all by
            # distance (measured at 20k chunks: 22 ms, exact, instead of 2 ms through HNSW).
            prepare=False,
        )
        return await cur.fetchall()


async def text_search(
    conn: AsyncConnection[Any], query: str, *, collection: str, k: int, filter_: dict[str, Any]
) -> list[Hit]:
    # websearch_to_tsquery accepts any user text; OR of the words ranks partial matches too.
    async with conn.cursor(row_factory=class_row(Hit)) as cur:
        await cur.execute(
            f"WITH q AS (SELECT replace(websearch_to_tsquery('simple', %(t)s)::text, '&', '|')::tsquery AS q) "  # noqa: S608
            f"SELECT {_HIT_COLS}, ts_rank_cd(tsv, q.q)::float8 AS score FROM knowledge_chunks, q "
            "WHERE collection = %(c)s AND metadata @> %(f)s AND tsv @@ q.q "
            "ORDER BY score DESC, document_id, chunk_index LIMIT %(k)s",
            {"t": query, "c": collection, "f": Jsonb(filter_), "k": k},
        )
        return await cur.fetchall()


def fuse(vector_hits: list[Hit], text_hits: list[Hit], k: int) -> list[Hit]:
    """Reciprocal rank fusion: score = sum of 1 / (RRF_K + rank) over the lists a chunk appears in."""
    fused: dict[tuple[str, int], Hit] = {}
    scores: dict[tuple[str, int], float] = {}
    for field, hits in (("vector_rank", vector_hits), ("text_rank", text_hits)):
        for rank, hit in enumerate(hits, start=1):
            key = (hit.document_id, hit.chunk_index)
            kept = fused.setdefault(key, hit)
            setattr(kept, field, rank)
            scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank)
    ordered = sorted(fused, key=lambda key: (-scores[key], key))
    out = []
    for key in ordered[:k]:
        hit = fused[key]
        hit.score = scores[key]
        out.append(hit)
    return out


async def list_documents(
    conn: AsyncConnection[Any], *, collection: str | None, limit: int, offset: int
) -> tuple[list[DocumentRow], int]:
    where = "NOT deleted AND (%(c)s::text IS NULL OR collection = %(c)s)"
    cur = await conn.execute(f"SELECT count(*) FROM knowledge_documents WHERE {where}", {"c": collection})  # noqa: S608
    total = await cur.fetchone()
    async with conn.cursor(row_factory=class_row(DocumentRow)) as rows:
        await rows.execute(
            "SELECT collection, document_id, latest_version, indexed_version, deleted, metadata, chunk_count, "  # noqa: S608
            f"model_id, updated_at, text FROM knowledge_documents WHERE {where} "
            "ORDER BY collection, document_id LIMIT %(l)s OFFSET %(o)s",
            {"c": collection, "l": limit, "o": offset},
        )
        return await rows.fetchall(), int(total[0]) if total else 0


async def get_document(conn: AsyncConnection[Any], document_id: str, collection: str | None) -> DocumentRow | None:
    async with conn.cursor(row_factory=class_row(DocumentRow)) as rows:
        await rows.execute(
            "SELECT collection, document_id, latest_version, indexed_version, deleted, metadata, chunk_count, "
            "model_id, updated_at, text FROM knowledge_documents "
            "WHERE document_id = %s AND (%s::text IS NULL OR collection = %s) AND NOT deleted "
            "ORDER BY collection LIMIT 1",
            (document_id, collection, collection),
        )
        return await rows.fetchone()
