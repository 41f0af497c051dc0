"""Context for tasks: the knowledge a rollout names, retrieved before its agent starts, and recorded.

A rollout names its knowledge in its metadata::

    {"knowledge": {"collection": "faq", "query": "Question: {input}", "k": 5, "mode": "hybrid",
                   "filter": {"lang": "en"}}}

``query`` is a template over the rollout (``{input}``, and ``{input[field]}`` for a dict input); without it the
task input itself is the query. The runner calls :func:`retrieve_context` after a claim and hands the result to the
agent; what was retrieved (document ids, versions, chunks, scores) is recorded as ``attempt.context_retrieved`` on
the attempt's topic, so a replay knows exactly what the agent saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from producers.client import AsyncClient, KnowledgeHit
    from producers.lifecycle_models import ClaimOut


class KnowledgeSpec(BaseModel):
    """What a rollout asks to retrieve (``metadata["knowledge"]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    collection: str = Field(min_length=1)
    query: str | None = None
    k: int = Field(default=5, ge=1, le=100)
    mode: Literal["hybrid", "vector", "text"] = "hybrid"
    filter: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class RetrievedContext:
    """What the agent gets: the query asked, the chunks found (best first), and the event that recorded them."""

    spec: KnowledgeSpec
    query: str
    hits: list[KnowledgeHit]
    model_id: str | None
    recorded_event_ids: list[str] = field(default_factory=list)

    def as_text(self) -> str:
        """The chunks as one block to put in a prompt."""
        return "\n\n".join(h.text for h in self.hits)


def knowledge_spec(rollout: ClaimOut) -> KnowledgeSpec | None:
    raw = (rollout.metadata or {}).get("knowledge")
    return None if raw is None else KnowledgeSpec.model_validate(raw)


def render_query(spec: KnowledgeSpec, task_input: Any) -> str:
    if spec.query is not None:
        return spec.query.format(input=task_input)
    return task_input if isinstance(task_input, str) else json.dumps(task_input, sort_keys=True)


async def retrieve_context(client: AsyncClient, rollout: ClaimOut) -> RetrievedContext | None:
    """Search the knowledge the rollout names and record the hits as an event of its attempt (None: names none)."""
    spec = knowledge_spec(rollout)
    if spec is None:
        return None
    query = render_query(spec, rollout.input)
    found = await client.search_knowledge(query, spec.collection, k=spec.k, mode=spec.mode, filter=spec.filter)
    recorded = await client.record_context(
        rollout.rollout_id,
        rollout.attempt_id,
        {
            "collection": spec.collection,
            "query": query,
            "mode": spec.mode,
            "k": spec.k,
            "model_id": found.model_id,
            "hits": [
                {"document_id": h.document_id, "document_version": h.document_version,
                 "chunk_index": h.chunk_index, "score": h.score}
                for h in found.hits
            ],
        },
    )  # fmt: skip
    return RetrievedContext(spec, query, found.hits, found.model_id, [str(i) for i in recorded.event_ids])
