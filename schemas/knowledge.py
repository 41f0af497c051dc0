"""Knowledge: documents of a collection, embedded into pgvector by the indexer. Keyed by document_id."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas._base import Event, Frozen, Json
from schemas.bounds import BIGINT_MAX, MAX_ID_LENGTH


class DocumentUpserted(Event):
    key_field: ClassVar[str] = "document_id"
    type: Literal["knowledge.document_upserted"] = "knowledge.document_upserted"
    version: Literal[1] = 1
    collection: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    document_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    text: str
    metadata: dict[str, Json] = Field(default_factory=dict)
    document_version: int = Field(
        ge=1, le=BIGINT_MAX, description="a newer version replaces an older one, never the reverse"
    )
    #: Embeddings are nondeterministic, so they are recorded in the event, never recomputed on replay.
    embedding: tuple[float, ...] | None = None
    embedding_model: str | None = None


class DocumentDeleted(Event):
    key_field: ClassVar[str] = "document_id"
    type: Literal["knowledge.document_deleted"] = "knowledge.document_deleted"
    version: Literal[1] = 1
    collection: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    document_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)


class EmbeddedChunk(Frozen):
    """One chunk of a document with its recorded vector."""

    chunk_index: int = Field(ge=0, description="position of the chunk in the document, from 0")
    start: int = Field(ge=0, description="first character of the chunk in the document's text")
    end: int = Field(ge=0, description="one past its last character")
    heading: str = Field(default="", description="the headings above the chunk, 'Title > Section'")
    text: str
    #: base64 of ``dimension`` little-endian float32 values: exact, and a quarter of the size of JSON numbers.
    vector: str = Field(min_length=1)


class ChunksEmbedded(Event):
    """Derived by the knowledge indexer: chunks of one document version with their vectors, recorded once.

    Embedding is slow and differs between model versions, so read models replay these vectors instead of
    embedding again. A large document comes in ``parts`` events (each under the record size limit); the read model
    swaps a document's chunks only once every part of a version has arrived, so it is never half indexed.
    """

    key_field: ClassVar[str] = "document_id"
    type: Literal["knowledge.chunks_embedded"] = "knowledge.chunks_embedded"
    version: Literal[1] = 1
    collection: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    document_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    document_version: int = Field(ge=1, le=BIGINT_MAX, description="the document version the chunks come from")
    metadata: dict[str, Json] = Field(default_factory=dict, description="the document's metadata, for filters")
    model_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="names the vector space")
    dimension: int = Field(ge=1, le=16000)
    normalized: bool = True
    chunker: str = Field(description="how the text was cut, e.g. 'chars:1200/200'")
    part: int = Field(ge=0, description="this event's part, from 0")
    parts: int = Field(ge=1, description="how many events carry this document version's chunks")
    chunk_count: int = Field(ge=0, description="chunks of this document version, over all parts")
    chunks: tuple[EmbeddedChunk, ...] = ()


class RetrievedHit(Frozen):
    """One retrieved chunk and its score (higher is better)."""

    document_id: str
    document_version: int
    chunk_index: int
    score: float


class ContextRetrieved(Event):
    """What an attempt's agent was given from the knowledge base before it started, so a replay sees the same."""

    key_field: ClassVar[str] = "rollout_id"
    type: Literal["attempt.context_retrieved"] = "attempt.context_retrieved"
    version: Literal[1] = 1
    rollout_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    attempt_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    collection: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    query: str
    mode: Literal["hybrid", "vector", "text"] = "hybrid"
    k: int = Field(ge=1, le=1000)
    model_id: str | None = Field(default=None, description="the embedder of the query (none for text search)")
    hits: tuple[RetrievedHit, ...] = ()
