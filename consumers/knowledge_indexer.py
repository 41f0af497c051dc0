"""The knowledge indexer: documents in, recorded chunk embeddings out (``knowledge.chunks_embedded``).

It reads ``agl.knowledge.v1`` in its own consumer group (one per model id, so a new model re-reads every document
from the start), cuts each upserted document into chunks, embeds them in batches and publishes the chunks with
their vectors through the publisher. Offsets are committed only after the derived events are on the log, so a
crash re-embeds at most the documents in flight (the read model ignores a second copy of an indexed version).

Within one fetched batch, an upsert followed by a newer upsert or a delete of the same document is skipped: it
would be superseded anyway. An embedding failure is retried with exponential backoff; a failure that persists (or
that retrying cannot fix, such as a dimension mismatch) is dead-lettered into ``knowledge_indexer_dead_letters``
and the partition moves on. No Kafka I/O happens inside a PostgreSQL transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from aiokafka import AIOKafkaConsumer

from knowledge.chunking import Chunk, ChunkUnit, chunker_for
from knowledge.embedders import EmbeddingError, vector_to_b64
from producers.publisher import EventPublisher
from schemas import ChunksEmbedded, DocumentDeleted, DocumentUpserted, EmbeddedChunk, decode
from schemas.errors import DecodeError
from schemas.topics import KNOWLEDGE

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

    from knowledge.embedders import Embedder

log = logging.getLogger(__name__)
SOURCE = "/agl/knowledge-indexer"
#: Keep each derived event well under the broker's 1 MB record limit.
MAX_PART_BYTES = 512 * 1024

_DDL = """
CREATE TABLE IF NOT EXISTS knowledge_indexer_dead_letters (
    consumer         text        NOT NULL,
    topic            text        NOT NULL,
    partition        integer     NOT NULL,
    "offset"         bigint      NOT NULL,
    collection       text        NOT NULL,
    document_id      text        NOT NULL,
    document_version bigint      NOT NULL,
    error            text        NOT NULL,
    attempts         integer     NOT NULL,
    parked_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition, "offset")
)
"""


@dataclass(frozen=True)
class IndexerConfig:
    chunk_size: int = 1200
    chunk_overlap: int = 200
    #: What ``chunk_size`` and ``chunk_overlap`` count: characters, or the embedder's tokens.
    chunk_unit: ChunkUnit = "chars"
    embed_batch: int = 64
    #: Tries of one embedding call before the document is dead-lettered.
    max_attempts: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    fetch_max_records: int = 200
    #: Largest derived event; a document with more chunks is published in several parts.
    max_part_bytes: int = MAX_PART_BYTES


def split_parts(chunks: list[EmbeddedChunk], dim: int, limit: int = MAX_PART_BYTES) -> list[list[EmbeddedChunk]]:
    """Group chunks into parts whose JSON stays under ``limit`` bytes (at least one chunk per part)."""
    parts: list[list[EmbeddedChunk]] = [[]]
    size = 0
    for chunk in chunks:
        # JSON escapes can double a text's bytes; base64 vectors are 4/3 of 4 bytes per dimension.
        cost = 2 * len(chunk.text.encode()) + 2 * len(chunk.heading.encode()) + (dim * 16) // 3 + 200
        if parts[-1] and size + cost > limit:
            parts.append([])
            size = 0
        parts[-1].append(chunk)
        size += cost
    return parts if parts[0] else []


def _check_shape(rows: Any, count: int, dim: int) -> None:
    if getattr(rows, "shape", None) != (count, dim):
        raise EmbeddingError(
            f"the embedder answered shape {getattr(rows, 'shape', None)}, not {(count, dim)}", retriable=False
        )


class KnowledgeIndexer:
    """Turns ``knowledge.document_upserted`` events into ``knowledge.chunks_embedded`` events."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        bootstrap: str,
        database_url: str,
        topic_prefix: str = "",
        config: IndexerConfig | None = None,
        group_id: str | None = None,
    ) -> None:
        self.embedder = embedder
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.topic = KNOWLEDGE.full_name(topic_prefix)
        self.topic_prefix = topic_prefix
        self.config = config or IndexerConfig()
        self.group_id = group_id or f"{topic_prefix}agl-knowledge-indexer.{embedder.model_id}"
        self._chunker = chunker_for(self.config.chunk_unit, self.config.chunk_size, self.config.chunk_overlap, embedder)
        self.chunker = self._chunker.name
        self.indexed = 0
        self.dead_lettered = 0
        #: Set once the dead-letter table exists and the consumer has started.
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Index until ``stop`` is set; commits after each partition batch is published."""
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            await conn.execute(_DDL)
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        self.ready.set()
        try:
            async with EventPublisher(self.bootstrap, topic_prefix=self.topic_prefix) as publisher:
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=500, max_records=self.config.fetch_max_records)
                    for tp, records in batches.items():
                        await self._index_batch(records, publisher, stop)
                        await consumer.commit({tp: records[-1].offset + 1})
        finally:
            await consumer.stop()

    async def _index_batch(
        self, records: list[ConsumerRecord[Any, Any]], publisher: EventPublisher, stop: asyncio.Event
    ) -> None:
        events: list[tuple[ConsumerRecord[Any, Any], DocumentUpserted | DocumentDeleted]] = []
        for record in records:
            try:
                event = decode(record.value, record.headers)
            except DecodeError as e:
                log.warning(
                    "skipping undecodable record %s:%d:%d (%s)", record.topic, record.partition, record.offset, e
                )
                continue
            if isinstance(event, (DocumentUpserted, DocumentDeleted)):
                events.append((record, event))
        # The last event of each document in this batch: earlier upserts of it would be superseded.
        last = {(e.collection, e.document_id): i for i, (_, e) in enumerate(events)}
        for i, (record, event) in enumerate(events):
            if isinstance(event, DocumentUpserted) and last[(event.collection, event.document_id)] == i:
                await self._index_document(record, event, publisher, stop)

    async def _embed(self, texts: list[str], stop: asyncio.Event) -> Any:
        delay = self.config.backoff_s
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                rows = await self.embedder.embed_documents(texts)
                _check_shape(rows, len(texts), self.embedder.dim)
            except EmbeddingError as e:
                if not e.retriable or attempt == self.config.max_attempts:
                    e.attempts = attempt
                    raise
                log.warning("embedding failed (attempt %d, retrying in %.1fs): %s", attempt, delay, e)
            else:
                return rows
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, self.config.backoff_max_s)
        raise AssertionError("unreachable")

    async def _index_document(
        self, record: ConsumerRecord[Any, Any], doc: DocumentUpserted, publisher: EventPublisher, stop: asyncio.Event
    ) -> None:
        chunks: list[Chunk] = self._chunker.chunk(doc.text)
        vectors: list[Any] = []
        if self._recorded_fits(doc, chunks):
            # The client recorded the document's embedding with this very model: use it, embed nothing.
            vectors = [np.asarray(doc.embedding, dtype=np.float32)]
        try:
            for i in range(len(vectors), len(chunks), self.config.embed_batch):
                batch = chunks[i : i + self.config.embed_batch]
                vectors.extend(await self._embed([c.embedding_text() for c in batch], stop))
        except EmbeddingError as e:
            await self._dead_letter(record, doc, str(e), e.attempts)
            return
        embedded = [
            EmbeddedChunk(chunk_index=c.index, start=c.start, end=c.end, heading=c.heading, text=c.text,
                          vector=vector_to_b64(v))
            for c, v in zip(chunks, vectors, strict=True)
        ]  # fmt: skip
        parts = split_parts(embedded, self.embedder.dim, self.config.max_part_bytes) or [[]]
        derived = [
            ChunksEmbedded(
                collection=doc.collection, document_id=doc.document_id, document_version=doc.document_version,
                metadata=doc.metadata, model_id=self.embedder.model_id, dimension=self.embedder.dim,
                normalized=self.embedder.normalized, chunker=self.chunker, part=n, parts=len(parts),
                chunk_count=len(embedded), chunks=tuple(part), causation_id=str(doc.event_id),
                correlation_id=doc.correlation_id, source=SOURCE,
            )
            for n, part in enumerate(parts)
        ]  # fmt: skip
        await publisher.publish_many(derived)
        self.indexed += 1

    def _recorded_fits(self, doc: DocumentUpserted, chunks: list[Chunk]) -> bool:
        return (
            doc.embedding is not None
            and doc.embedding_model == self.embedder.model_id
            and len(doc.embedding) == self.embedder.dim
            and len(chunks) == 1
        )

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], doc: DocumentUpserted, error: str, attempts: int
    ) -> None:
        log.error("dead-lettering %s/%s v%d: %s", doc.collection, doc.document_id, doc.document_version, error)
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO knowledge_indexer_dead_letters (consumer, topic, partition, \"offset\", collection, "
                "document_id, document_version, error, attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (self.group_id, record.topic, record.partition, record.offset, doc.collection, doc.document_id,
                 doc.document_version, error, attempts),
            )  # fmt: skip
        self.dead_lettered += 1
