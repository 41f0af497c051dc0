"""Episodic memories from finished rollouts: what the episode worker folds, decides and writes.

For every rollout that reaches a terminal status the policy accepts, ONE memory is written: a
``knowledge.document_upserted`` with the id ``episode:<rollout_id>`` in the agent's memory collection
(``memory.<agent_id>.default``, where ``agl.memory.recall`` looks), kind ``episodic``, its text a fixed template
(task input, outcome, attempts, final reward, final answer) and its provenance in the metadata. The indexer embeds
it like any memory, and the memories read model consolidates it with the others (merge, reward weight, decay).

The fold reads three co-partitioned topics (a rollout's events share its key, so one owner sees all of them):
``agl.rollouts.v1`` (the input and named agent at enqueue, the router's agent type, the decider's transitions,
highest ``seq`` wins), ``agl.rewards.v1`` (the last reward of each attempt) and ``agl.spans.v1`` (the latest
span carrying ``agentlightning.operation.output``: the final answer). Its ``apply`` is pure: the documents it
decides go to the outbox in the same transaction as the fold and its positions (no Kafka I/O inside it), and the
relay publishes them. Everything about a document is derived from the events: its version (one more than the
last one written, and only when the text changes), its ``event_id`` (a UUIDv5 of collection, id and version) and
``occurred_at`` (the latest event of the rollout). So a duplicated or replayed terminal event changes nothing, a
worker killed at any moment resumes from its stored positions, and a second instance writes the same bytes: a
repeat is the same version of the same document, which every reader ignores.

A reward or answer that reaches the worker after the terminal decision (they are on other topics) rewrites the
episode as its next version; the policy never retracts an episode already written.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from core.errors import ConfigError
from producers import outbox
from projections.base import Envelope, Projection
from projections.migrations import Migration
from schemas import (
    TERMINAL_STATUSES,
    DocumentUpserted,
    RewardAssigned,
    RolloutEnqueued,
    RolloutTransitioned,
    RouterAssigned,
    SpanRecorded,
)
from schemas.bounds import MAX_ID_LENGTH
from schemas.topics import REWARDS, ROLLOUTS, SPANS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from core.config import Settings
    from producers.publisher import EventPublisher

MEMORY_PREFIX = "memory."
DEFAULT_SCOPE = "default"
SOURCE = "/agl/memory-episodes"
#: The span attribute an agent's final answer is read from (``agl.operation`` records outputs there).
ANSWER_ATTRIBUTE = "agentlightning.operation.output"
#: Inputs and answers longer than this are cut in the summary: an episode is a memory, not an archive.
MAX_FIELD_CHARS = 2000
#: Namespace of the episodes' event ids (a UUIDv5 of collection, document id and version).
EPISODE_NAMESPACE = uuid.UUID("6f1d7f3e-2b0c-5a8e-9a51-3f0c4e9d2a17")


def memory_collection(agent_id: str, scope: str = DEFAULT_SCOPE) -> str:
    """The collection of one agent's memories in one scope (``agl.memory.Memory`` reads and writes it)."""
    return f"{MEMORY_PREFIX}{agent_id}.{scope}"


def episode_id(rollout_id: str) -> str:
    """The one memory id of a rollout's episode; ids too long for a document id are hashed, still deterministic."""
    plain = f"episode:{rollout_id}"
    return plain if len(plain) <= MAX_ID_LENGTH else f"episode:{hashlib.sha256(rollout_id.encode()).hexdigest()}"


@dataclass(frozen=True)
class EpisodePolicy:
    """Which finished rollouts become episodes (``AGL_MEMORY_EPISODES*``)."""

    enabled: bool = True
    statuses: frozenset[str] = frozenset({"succeeded", "failed"})
    #: An episode needs a final reward of at least this; None = any reward, or none.
    min_reward: float | None = None
    #: Whose memories an episode goes to when the rollout names no agent and was not routed to an agent type.
    default_agent: str = "default"

    def accepts(self, status: str, reward: float | None) -> bool:
        if not self.enabled or status not in self.statuses:
            return False
        return self.min_reward is None or (reward is not None and reward >= self.min_reward)

    def describe(self) -> str:
        if not self.enabled:
            return "off: no episodes are written"
        floor = "any reward" if self.min_reward is None else f"reward >= {self.min_reward}"
        return f"statuses {','.join(sorted(self.statuses))}, {floor}, default agent {self.default_agent!r}"


def policy_from_settings(settings: Settings) -> EpisodePolicy:
    statuses = frozenset(s.strip() for s in settings.memory_episode_statuses.split(",") if s.strip())
    if not statuses or not statuses <= TERMINAL_STATUSES:
        raise ConfigError(
            f"AGL_MEMORY_EPISODE_STATUSES={settings.memory_episode_statuses!r}: "
            f"a comma-separated subset of {', '.join(sorted(TERMINAL_STATUSES))}"
        )
    return EpisodePolicy(
        enabled=settings.memory_episodes == "on",
        statuses=statuses,
        min_reward=settings.memory_episode_min_reward,
        default_agent=settings.memory_episode_agent,
    )


@dataclass(frozen=True)
class Episode:
    """What is known of a finished rollout, as the fold holds it."""

    rollout_id: str
    input_text: str | None
    status: str
    attempts: int
    attempt_id: str | None
    reward: float | None
    answer: str | None

    def summary(self) -> str:
        """The memory's text: a fixed template, so the same facts always give the same text (and vector).

        The rollout id is left out on purpose: two rollouts of the same task with the same outcome read the same,
        and consolidation merges them into one memory supported by both.
        """
        lines = [
            f"Task: {self.input_text if self.input_text is not None else '(unknown)'}",
            f"Outcome: {self.status} after {self.attempts} attempt{'' if self.attempts == 1 else 's'}",
            f"Final reward: {'none' if self.reward is None else _number(self.reward)}",
        ]
        if self.answer is not None:
            lines.append(f"Final answer: {self.answer}")
        return "\n".join(lines)

    def metadata(self, agent_id: str) -> dict[str, Any]:
        return {
            "kind": "episodic", "agent_id": agent_id, "rollout_id": self.rollout_id, "attempt_id": self.attempt_id,
            "reward": self.reward, "status": self.status, "attempts": self.attempts, "source": "episodes",
        }  # fmt: skip


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def render_value(value: Any) -> str:
    """A task input or answer as summary text: strings as they are, anything else as sorted-key JSON."""
    text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    text = " ".join(text.split())  # one line: the template stays readable and its lines stay its fields
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 1] + "…"


def agent_of(named: str | None, routed: str | None, policy: EpisodePolicy) -> str:
    """Whose memory: the agent the rollout names (metadata ``agent_id``), else the agent type the router chose."""
    for candidate in (named, routed):
        if candidate and len(memory_collection(candidate)) <= MAX_ID_LENGTH:
            return candidate
    return policy.default_agent


def episode_document(episode: Episode, agent_id: str, version: int, occurred_at: datetime) -> DocumentUpserted:
    """The document of one version of an episode: every field derived, so a repeat is byte for byte the same."""
    collection = memory_collection(agent_id)
    document_id = episode_id(episode.rollout_id)
    return DocumentUpserted(
        event_id=uuid.uuid5(EPISODE_NAMESPACE, f"{collection}\n{document_id}\n{version}"),
        occurred_at=occurred_at,
        collection=collection,
        document_id=document_id,
        text=episode.summary(),
        metadata=episode.metadata(agent_id),
        document_version=version,
        correlation_id=episode.rollout_id,
        source=SOURCE,
    )


# -- the fold ------------------------------------------------------------------------------------------------------
_TABLES_SQL = """
-- One row per rollout seen: what an episode is made of, and the last episode written for it.
CREATE TABLE episode_rollouts (
    rollout_id         text        PRIMARY KEY,
    input_text         text,                    -- the task input as the summary shows it (null: not seen yet)
    named_agent        text,                    -- metadata.agent_id at enqueue
    routed_agent       text,                    -- router.assigned's agent type
    seq                integer     NOT NULL DEFAULT 0,  -- the decider's last decision applied
    status             text,
    attempt_count      integer     NOT NULL DEFAULT 0,
    final_attempt_id   text,
    answer             text,
    answer_attempt_id  text,
    answer_seq         bigint      NOT NULL DEFAULT -1,
    updated_at         timestamptz NOT NULL,    -- the latest occurred_at of its events: the episode's time
    written_version    integer     NOT NULL DEFAULT 0,
    written_text       text,
    written_collection text
);
-- The last reward of each attempt ('' = a reward naming no attempt).
CREATE TABLE episode_rewards (
    rollout_id  text             NOT NULL,
    attempt_key text             NOT NULL,
    value       double precision NOT NULL,
    PRIMARY KEY (rollout_id, attempt_key)
);
"""

_TOUCH = (
    "INSERT INTO episode_rollouts (rollout_id, updated_at) VALUES (%s, %s) ON CONFLICT (rollout_id) "
    "DO UPDATE SET updated_at = GREATEST(episode_rollouts.updated_at, EXCLUDED.updated_at)"
)

_READ = """
SELECT r.rollout_id, r.input_text, r.named_agent, r.routed_agent, r.status, r.attempt_count, r.final_attempt_id,
       CASE WHEN r.answer_attempt_id IS NOT DISTINCT FROM r.final_attempt_id THEN r.answer END,
       r.updated_at, r.written_version, r.written_text, r.written_collection,
       (SELECT w.value FROM episode_rewards w
         WHERE w.rollout_id = r.rollout_id AND w.attempt_key IN (COALESCE(r.final_attempt_id, ''), '')
         ORDER BY w.attempt_key = '' LIMIT 1)
  FROM episode_rollouts r
 WHERE r.rollout_id = ANY(%s) AND r.status = ANY(%s)
 ORDER BY r.rollout_id
"""


async def _fold(e: Any, conn: AsyncConnection[Any]) -> bool:
    """Apply one event to its rollout's row; whether it may change the rollout's episode."""
    if isinstance(e, SpanRecorded):
        answer = e.attributes.get(ANSWER_ATTRIBUTE)
        if answer is None or isinstance(answer, (dict, list)):
            return False  # most spans carry no answer: no write at all
        await conn.execute(_TOUCH, (e.rollout_id, e.occurred_at))
        await conn.execute(
            "UPDATE episode_rollouts SET answer = %s, answer_attempt_id = %s, answer_seq = %s "
            "WHERE rollout_id = %s AND answer_seq < %s",
            (render_value(answer), e.attempt_id, e.sequence_id, e.rollout_id, e.sequence_id),
        )
        return True
    await conn.execute(_TOUCH, (e.rollout_id, e.occurred_at))
    if isinstance(e, RolloutEnqueued):
        named = e.metadata.get("agent_id")
        await conn.execute(
            "UPDATE episode_rollouts SET input_text = %s, named_agent = %s WHERE rollout_id = %s",
            (render_value(e.input), named if isinstance(named, str) else None, e.rollout_id),
        )
    elif isinstance(e, RouterAssigned):
        await conn.execute(
            "UPDATE episode_rollouts SET routed_agent = %s WHERE rollout_id = %s", (e.agent_type, e.rollout_id)
        )
    elif isinstance(e, RolloutTransitioned):
        # Statuses come from the decider's decisions only, the highest seq winning: a duplicate or a replay of an
        # older decision changes nothing.
        await conn.execute(
            "UPDATE episode_rollouts SET seq = %s, status = %s, attempt_count = %s, final_attempt_id = %s "
            "WHERE rollout_id = %s AND seq < %s",
            (e.seq, e.status, e.attempt_count, e.latest_attempt_id or e.attempt_id, e.rollout_id, e.seq),
        )
    elif isinstance(e, RewardAssigned):
        await conn.execute(
            "INSERT INTO episode_rewards VALUES (%s, %s, %s) "
            "ON CONFLICT (rollout_id, attempt_key) DO UPDATE SET value = EXCLUDED.value",
            (e.rollout_id, e.attempt_id or "", e.value),
        )
    return True


async def _decide(
    rollout_ids: Sequence[str], conn: AsyncConnection[Any], policy: EpisodePolicy
) -> list[DocumentUpserted]:
    """The episodes to write for these rollouts: new ones, and new versions of those whose text changed."""
    cur = await conn.execute(_READ, (list(rollout_ids), sorted(TERMINAL_STATUSES)))
    documents: list[DocumentUpserted] = []
    for row in await cur.fetchall():
        (rollout_id, input_text, named, routed, status, attempts, attempt_id, answer, updated_at,
         written_version, written_text, written_collection, reward) = row  # fmt: skip
        episode = Episode(rollout_id, input_text, status, attempts, attempt_id, reward, answer)
        if not policy.accepts(status, reward):
            continue
        agent_id = agent_of(named, routed, policy)
        document = episode_document(episode, agent_id, written_version + 1, updated_at)
        if (document.text, document.collection) == (written_text, written_collection):
            continue  # already written as it stands: a duplicate or a replay
        await conn.execute(
            "UPDATE episode_rollouts SET written_version = %s, written_text = %s, written_collection = %s "
            "WHERE rollout_id = %s",
            (document.document_version, document.text, document.collection, rollout_id),
        )
        documents.append(document)
    return documents


def episodes_projection(policy: EpisodePolicy, publisher: EventPublisher) -> Projection:
    """The episode fold as a projection: positions, co-partitioned ownership and key locks come from the engine.

    ``publisher`` only encodes the documents for the outbox (its topic names carry the deployment's prefix); the
    outbox relay publishes them after the transaction commits.
    """

    async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
        touched: dict[str, None] = {}
        for envelope in envelopes:
            event = envelope.event
            if event is not None and await _fold(event, conn):
                touched[event.rollout_id] = None  # type: ignore[attr-defined]
        if touched:
            await outbox.append(conn, publisher, await _decide(sorted(touched), conn, policy))

    return Projection(
        name="episodes",
        version=1,
        topics=(ROLLOUTS, REWARDS, SPANS),
        event_types=frozenset({RolloutEnqueued, RouterAssigned, RolloutTransitioned, RewardAssigned, SpanRecorded}),
        migrations=(Migration(1, "tables", _TABLES_SQL),),
        apply=apply,
        tables=("episode_rollouts", "episode_rewards"),
        lock_keys=True,
        # Every fold is idempotent but the reward's last-one-wins: a re-published copy of an old reward must not
        # overwrite a newer one, so rewards alone are deduplicated by event id.
        idempotent_types=frozenset({RolloutEnqueued, RouterAssigned, RolloutTransitioned, SpanRecorded}),
        description="episodic memories of finished rollouts, written through the outbox (agl knowledge episodes)",
    )
