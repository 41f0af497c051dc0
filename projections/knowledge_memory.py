"""The memories read model: agent memories (knowledge documents of ``memory.*`` collections) with their recorded
vectors, and the rewards of the rollouts that wrote them, for consolidation (``knowledge.consolidation``).

It applies ``knowledge.document_upserted`` of memory collections (text, kind, provenance, when it was written),
their ``knowledge.chunks_embedded`` (the vector of a memory is the mean of its chunks' recorded vectors: no
embedder is called), ``knowledge.document_deleted`` of them, and every ``reward.assigned`` (summed per rollout).
A memory takes part in consolidation once its vector is in. The newest version of a memory wins; a deleted
version never comes back.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg.types.json import Jsonb

from knowledge.consolidation import MemoryItem
from projections.base import BACKGROUND_LINGER_MS, Envelope, Projection
from projections.migrations import load_package_migrations
from schemas import ChunksEmbedded, DocumentDeleted, DocumentUpserted, RewardAssigned
from schemas.topics import KNOWLEDGE, REWARDS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

MEMORY_PREFIX = "memory."


def _vector(event: ChunksEmbedded) -> bytes:
    rows = [np.frombuffer(base64.b64decode(c.vector), dtype="<f4") for c in event.chunks]
    mean = np.mean(rows, axis=0) if rows else np.zeros(event.dimension, dtype=np.float32)
    return np.asarray(mean, dtype="<f4").tobytes()


async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
    # Rewards touch only memory_rewards: a batch's rewards are gathered here and added in two statements for the
    # whole batch (a statement per reward was this projection's main cost under a busy runner pool).
    rewards: dict[str, list[float]] = {}
    for envelope in envelopes:
        e = envelope.event
        if isinstance(e, RewardAssigned):
            rewards.setdefault(e.rollout_id, []).append(e.value)
        elif isinstance(e, DocumentDeleted) and e.collection.startswith(MEMORY_PREFIX):
            key = (e.collection, e.document_id)
            await conn.execute(
                "INSERT INTO memory_deleted SELECT collection, memory_id, version FROM memory_items "
                "WHERE collection = %s AND memory_id = %s "
                "ON CONFLICT (collection, memory_id) DO UPDATE SET through = EXCLUDED.through",
                key,
            )
            await conn.execute("DELETE FROM memory_items WHERE collection = %s AND memory_id = %s", key)
        elif isinstance(e, DocumentUpserted) and e.collection.startswith(MEMORY_PREFIX):
            # Versions only grow; a deleted version stays deleted (a later one may come). The vector comes with
            # the version's chunks.
            await conn.execute(
                "INSERT INTO memory_items SELECT %s, %s, %s, %s, %s, %s, %s, %s, NULL "
                "WHERE NOT EXISTS (SELECT 1 FROM memory_deleted "
                "WHERE collection = %s AND memory_id = %s AND through >= %s) "
                "ON CONFLICT (collection, memory_id) DO UPDATE SET version = EXCLUDED.version, text = EXCLUDED.text, "
                "kind = EXCLUDED.kind, rollout_id = EXCLUDED.rollout_id, metadata = EXCLUDED.metadata, "
                "occurred_at = EXCLUDED.occurred_at, vector = NULL "
                "WHERE memory_items.version < EXCLUDED.version",
                (
                    e.collection, e.document_id, e.document_version, e.text,
                    str(e.metadata.get("kind", "semantic")), _str_or_none(e.metadata.get("rollout_id")),
                    Jsonb(e.metadata), e.occurred_at, e.collection, e.document_id, e.document_version,
                ),
            )  # fmt: skip
        elif isinstance(e, ChunksEmbedded) and e.collection.startswith(MEMORY_PREFIX) and e.part == 0:
            # A memory is short: its first part carries it. Only the version the row holds takes the vector.
            await conn.execute(
                "UPDATE memory_items SET vector = %s WHERE collection = %s AND memory_id = %s AND version = %s",
                (_vector(e), e.collection, e.document_id, e.document_version),
            )
    if rewards:
        await _add_rewards(conn, rewards)


async def _add_rewards(conn: AsyncConnection[Any], rewards: dict[str, list[float]]) -> None:
    """Add each rollout's rewards (in log order) to its stored sum, one at a time as the log gives them.

    Floating-point addition is not associative: summing a batch first and adding that to the stored sum would make
    the result depend on where batches were cut, and a rebuild (other cuts) would then differ from the live table
    in the last bits, which refuses its switch. The batch's keys are locked, so the stored sums stay as read.
    """
    ids = sorted(rewards)
    cur = await conn.execute(
        "SELECT rollout_id, reward_sum, reward_count FROM memory_rewards WHERE rollout_id = ANY(%b)", (ids,)
    )
    stored: dict[str, tuple[float, int]] = {r: (total, count) for r, total, count in await cur.fetchall()}
    sums, counts = [], []
    for rollout_id in ids:
        total: float | None
        total, count = stored.get(rollout_id, (None, 0))
        for value in rewards[rollout_id]:
            total = value if total is None else total + value
            count += 1
        sums.append(total)
        counts.append(count)
    await conn.execute(
        "INSERT INTO memory_rewards SELECT * FROM unnest(%b::text[], %b::float8[], %b::int[]) "
        "ON CONFLICT (rollout_id) DO UPDATE SET reward_sum = EXCLUDED.reward_sum, reward_count = EXCLUDED.reward_count",
        (ids, sums, counts),
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


PROJECTION = Projection(
    name="memories",
    version=1,
    topics=(KNOWLEDGE, REWARDS),
    event_types=frozenset({DocumentUpserted, ChunksEmbedded, DocumentDeleted, RewardAssigned}),
    migrations=tuple(load_package_migrations("projections", "sql/knowledge_memory")),
    apply=apply,
    tables=("memory_items", "memory_deleted", "memory_rewards"),
    lock_keys=True,
    linger_ms=BACKGROUND_LINGER_MS,
    description="agent memories with recorded vectors and rollout rewards (GET /v1/memory/{agent_id})",
)


# -- read queries (run with search_path at the active generation) --------------------------------------------------
async def memories_of(conn: AsyncConnection[Any], collection: str) -> tuple[list[MemoryItem], dict[str, float]]:
    """The memories of one collection, and the mean reward of each rollout that wrote one."""
    cur = await conn.execute(
        "SELECT memory_id, text, kind, rollout_id, occurred_at, vector FROM memory_items "
        "WHERE collection = %s AND vector IS NOT NULL",
        (collection,),
    )
    items = [
        MemoryItem(memory_id, text, kind, rollout_id, occurred_at, np.frombuffer(vector, dtype="<f4").copy())
        for memory_id, text, kind, rollout_id, occurred_at, vector in await cur.fetchall()
    ]
    cur = await conn.execute(
        "SELECT r.rollout_id, r.reward_sum / r.reward_count FROM memory_rewards r "
        "WHERE r.rollout_id IN (SELECT rollout_id FROM memory_items WHERE collection = %s)",
        (collection,),
    )
    rewards = {str(rollout): float(mean) for rollout, mean in await cur.fetchall()}
    return items, rewards
