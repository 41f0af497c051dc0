"""What the SDK's read commands answer: the rollouts, resources and knowledge the API's read routes return.

Kept apart from the calls (:mod:`producers.client_calls`) because callers hold these: they are the SDK's
return types, re-exported by :mod:`producers.client`. Models that answer with more than the SDK names keep the
rest as extra fields, so a newer API does not break an older SDK.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from schemas import Resource


class ResourcesAnswer(BaseModel):
    resources_id: str
    resources_version: int
    resources: dict[str, Resource]


class RolloutAnswer(BaseModel):
    """A rollout as the read routes answer it; fields the SDK does not name are kept as extra fields."""

    model_config = ConfigDict(extra="allow")

    rollout_id: str
    status: str


class RolloutsAnswer(BaseModel):
    rollouts: list[RolloutAnswer]


class KnowledgeHit(BaseModel):
    """A chunk found by ``search_knowledge``; fields the SDK does not name are kept as extra fields."""

    model_config = ConfigDict(extra="allow")

    document_id: str
    document_version: int
    chunk_index: int
    text: str
    score: float


class KnowledgeSearchAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_id: str | None
    hits: list[KnowledgeHit]


class KnowledgeDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    collection: str
    document_id: str
    latest_version: int
    indexed_version: int | None


class KnowledgeDocumentsPage(BaseModel):
    items: list[KnowledgeDocument]
    total: int
