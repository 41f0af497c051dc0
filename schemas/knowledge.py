"""Knowledge: documents of a collection, embedded into pgvector by the indexer. Keyed by document_id."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas._base import Event, Json
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
