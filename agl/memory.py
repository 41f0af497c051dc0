"""Agent memory: what an agent learned, written during a rollout and recalled later, with the knowledge search.

A memory is a knowledge document (so an event, ``knowledge.document_upserted``) in a collection of its own per
agent and scope, ``memory.<agent_id>.<scope>``: the indexer embeds it like any document, and ``recall`` is the
same hybrid search. Its metadata says what kind it is (``episodic``: what happened in a rollout; ``semantic``: a
fact or rule) and where it came from (the rollout and attempt it was written in, when written inside one)::

    memory = agl.memory.Memory(client, agent_id="math-agent")
    with agl.memory.bind(memory):              # the runner binds one per attempt
        await agl.memory.remember("carry the 1 when a column sums past 9", kind="semantic")
        hits = await agl.memory.recall("how to add multi-digit numbers", k=3)
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from agl import agent
from agl.errors import LightningError
from knowledge.episodes import memory_collection
from producers.models import DocumentIn

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from producers.client import AsyncClient, KnowledgeHit

MemoryKind = Literal["episodic", "semantic"]


@dataclass(frozen=True)
class Memory:
    """The memories of one agent in one scope, reached through the API."""

    client: AsyncClient
    agent_id: str
    scope: str = "default"

    @property
    def collection(self) -> str:
        return memory_collection(self.agent_id, self.scope)

    async def remember(
        self,
        text: str,
        *,
        kind: MemoryKind = "semantic",
        memory_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Write a memory (a new version of ``memory_id`` when given); returns its id."""
        tags: dict[str, Any] = {"kind": kind, "agent_id": self.agent_id, **(metadata or {})}
        scope = agent._SCOPE.get()
        if scope is not None:  # provenance: the rollout and attempt this was learned in
            tags |= {"rollout_id": scope.rollout.rollout_id, "attempt_id": scope.rollout.attempt_id}
        document = DocumentIn(collection=self.collection, document_id=memory_id, text=text, metadata=tags)
        return (await self.client.upsert_document(document)).document_id

    async def recall(
        self, query: str, k: int = 5, *, kind: MemoryKind | None = None, mode: str = "hybrid"
    ) -> list[KnowledgeHit]:
        """The ``k`` memories best matching ``query`` (of one ``kind`` when given)."""
        found = await self.client.search_knowledge(
            query, self.collection, k=k, mode=mode, filter={"kind": kind} if kind else None
        )
        return found.hits

    async def forget(self, memory_id: str) -> None:
        await self.client.delete_document(self.collection, memory_id)


_BOUND: ContextVar[Memory | None] = ContextVar("agl_memory", default=None)


@contextlib.contextmanager
def bind(memory: Memory) -> Iterator[Memory]:
    """Make ``memory`` the one :func:`remember` and :func:`recall` use inside the block."""
    token = _BOUND.set(memory)
    try:
        yield memory
    finally:
        _BOUND.reset(token)


def current() -> Memory:
    memory = _BOUND.get()
    if memory is None:
        raise LightningError("no memory is bound: use `with agl.memory.bind(Memory(client, agent_id)):`")
    return memory


async def remember(text: str, *, kind: MemoryKind = "semantic", **options: Any) -> str:
    """Write a memory of the bound agent (see :meth:`Memory.remember`)."""
    return await current().remember(text, kind=kind, **options)


async def recall(query: str, k: int = 5, **options: Any) -> list[KnowledgeHit]:
    """Search the bound agent's memories (see :meth:`Memory.recall`)."""
    return await current().recall(query, k, **options)
