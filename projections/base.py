"""The projection API: what a read model declares, and the records its ``apply`` receives.

A projection is a name, a version, the topics and event types it reads, its migrations, the tables that make up
its read model, and a pure ``apply(envelopes, conn)``. ``apply`` reads nothing but its arguments and the database
(no Kafka, no clock, no network), so a replay of the same events gives the same rows. The engine calls it once per
batch, inside the transaction that also stores the batch's positions, with ``search_path`` set to the projection's
generation schema: its SQL names tables without a schema.

Batches mix partitions and, for projections that read several topics, topics: ``apply`` may rely on the order of
events within one partition, never on an order between partitions or topics.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from projections.errors import ProjectionDefinitionError
from schemas.catalog import EVENT_TYPES, event_type

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from projections.migrations import Migration
    from schemas import Event
    from schemas.topics import TopicSpec

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
#: A deferred index may run twice (a resumed rebuild, every start of a live worker): it must say IF NOT EXISTS.
_DEFERRED_INDEX = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+IF\s+NOT\s+EXISTS\s", re.IGNORECASE)


class Envelope(NamedTuple):
    """One record as a projection sees it: the decoded event (``None`` for raw projections) and where it sits.

    A named tuple, not a dataclass: the engine builds one per record, and a tuple is built four times faster.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int
    event: Event | None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    def require_event(self) -> Event:
        assert self.event is not None, "raw projections have no decoded event"
        return self.event


ApplyFn = Callable[[Sequence[Envelope], "AsyncConnection[Any]"], Awaitable[None]]


#: A lingering fetch must come back well inside the consumer's request timeout and a rebalance's patience.
MAX_LINGER_MS = 5_000
#: How long the built-in read models nobody waits on to the millisecond linger (see ``Projection.linger_ms``):
#: Kafka's own default wait for a fetch that has less than it asked for.
BACKGROUND_LINGER_MS = 500


@dataclass(frozen=True)
class Projection:
    """A read model the engine keeps up to date.

    Args:
        name: lower-case identifier; the tables of generation N live in the schema ``<name>_g<N>``.
        version: bump it when ``apply`` or the migrations change; ``agl projections rebuild`` builds it.
        topics: the topics it reads (registry specs; the deployment prefix is added by the engine).
        event_types: the event classes ``apply`` receives; others in those topics are skipped. Empty = all. An
            event that stands for several of a class read here (``spans.recorded`` for ``span.recorded``) reaches
            ``apply`` as those events, each in an envelope of its own at the record's position.
        migrations: DDL run inside the generation schema, with unqualified table names.
        apply: ``async apply(envelopes, conn)``, pure (see the module docstring).
        tables: the read model's tables, compared by checksum after a rebuild.
        per_key_ordering: when an event of a key is dead-lettered, later events of that key are parked behind it.
        lock_keys: take a transaction-scoped advisory lock per record key before ``apply``, so two instances (or
            a rebalance overlap) never fold one entity at once; default: the same as ``per_key_ordering``. An
            ``apply`` that reads rows and writes them back (a fold) needs it: ``FOR UPDATE`` cannot lock rows that
            do not exist yet.
        raw: ``apply`` gets undecoded records (``event`` is ``None``) and nothing is dead-lettered for decoding.
        dedupe: skip events whose ``event_id`` this projection already applied (a re-published event).
        idempotent_types: event classes ``apply`` handles idempotently: a second copy of such an event, in the
            same batch or years later, leaves the rows as they were (first-wins or earliest/latest-wins facts).
            The engine keeps no ``event_id`` for them, which saves a write per event; other types are deduped.
        deferred_indexes: ``CREATE INDEX IF NOT EXISTS`` statements (unqualified names) kept out of the migrations
            so that a rebuild builds them once over the loaded rows, after its catch-up and before the switch,
            instead of updating them with every row it writes (an HNSW index costs far more row by row). A
            generation created live runs them right after its migrations. See ``tracking.build_deferred_indexes``.
        linger_ms: how long the broker may hold a fetch for more records (up to 1 MiB) before handing it over. 0
            (the default): as soon as one arrives, for read models users wait on (a rollout's status). A read model
            nobody waits on to the millisecond (spans, triplets, the archive) lingers: under a trickle of events it
            applies a few larger batches a second instead of one transaction per event or two, which frees CPU for
            the work users do wait on, at the price of up to ``linger_ms`` more lag.
    """

    name: str
    version: int
    topics: tuple[TopicSpec, ...]
    apply: ApplyFn
    migrations: tuple[Migration, ...] = ()
    event_types: frozenset[type[Event]] = frozenset()
    tables: tuple[str, ...] = ()
    per_key_ordering: bool = False
    lock_keys: bool | None = None
    raw: bool = False
    dedupe: bool = True
    idempotent_types: frozenset[type[Event]] = frozenset()
    deferred_indexes: tuple[str, ...] = ()
    linger_ms: int = 0
    description: str = ""
    type_names: frozenset[str] = field(init=False)
    #: types of the events read as their members (``Event.member_type`` is among ``event_types``, they are not)
    member_type_names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ProjectionDefinitionError(f"projection name {self.name!r} must match {_NAME.pattern}")
        if self.version < 1:
            raise ProjectionDefinitionError(f"projection {self.name}: version must be >= 1")
        if not self.topics:
            raise ProjectionDefinitionError(f"projection {self.name} reads no topic")
        grouped = frozenset(
            event_type(cls)
            for cls in EVENT_TYPES
            if cls.member_type is not None and cls.member_type in self.event_types and cls not in self.event_types
        )
        names = frozenset(event_type(cls) for cls in self.event_types)
        object.__setattr__(self, "type_names", names | grouped)
        object.__setattr__(self, "member_type_names", grouped)
        if self.lock_keys is None:
            object.__setattr__(self, "lock_keys", self.per_key_ordering)
        if self.event_types and not self.idempotent_types <= self.event_types:
            raise ProjectionDefinitionError(f"projection {self.name}: idempotent_types must be among event_types")
        if not 0 <= self.linger_ms <= MAX_LINGER_MS:
            raise ProjectionDefinitionError(f"projection {self.name}: linger_ms must be 0-{MAX_LINGER_MS}")
        if not all(_DEFERRED_INDEX.match(stmt) for stmt in self.deferred_indexes):
            raise ProjectionDefinitionError(
                f"projection {self.name}: deferred_indexes must be CREATE INDEX IF NOT EXISTS statements"
            )

    def wants(self, type_name: str) -> bool:
        """Whether events of ``type_name`` reach ``apply`` (an empty ``event_types`` wants everything)."""
        return not self.type_names or type_name in self.type_names

    def topic_names(self, prefix: str) -> list[str]:
        return [t.full_name(prefix) for t in self.topics]


def schema_name(projection: str, generation: int) -> str:
    return f"{projection}_g{generation}"
