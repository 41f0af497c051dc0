"""The triplet read model: each attempt's LLM calls as (prompt, response, reward) triplets with token ids.

The projection reads three co-partitioned topics keyed by rollout id (spans, rewards, rollouts: one instance owns
a rollout on all three, and the engine locks each key for the batch). It keeps its own copy of the facts:

- ``triplet_spans``: every span once per (rollout, attempt, span id), first copy in log order wins;
- ``triplet_rewards``: every reward event once per event id, with its log offset (the rewards of a rollout share
  one partition, so the offset is "event order");
- ``triplet_rollouts``: each rollout's mode and resources id, first enqueue wins (for the routes' filters).

Once per batch, every attempt the batch touched (a span of it, or a reward naming it) has its triplets
recomputed from all its stored spans and rewards with the pure adapter (``projections.triplet_adapter.to_triplets``)
and replaced (delete and insert). So a late span or reward of a finished attempt updates its triplets, and the
order between the topics does not matter: the rows are a function of the set of facts, never of the batches they
came in. That also makes a rebuild byte-identical, and every event type idempotent (a copy is recognised by its key
and changes nothing), so the engine keeps no event ids for them.

One rule needs the whole rollout: a reward without an attempt id belongs to the rollout's newest attempt that has
triplets (the attempt whose spans reach the highest sequence id), and a new attempt's spans move it. So a rollout
holding such a reward is recomputed whole. An attempt's spans are read back (and decoded) once per batch that
touches it: attempts are short (tens to hundreds of spans), and a rebuild, whose batches are cut in time order
across the three topics, mostly meets an attempt's facts in one or two batches.

The adapter configuration is the projection's configuration: :func:`triplet_projection` builds one per
configuration (a different configuration needs a different name or version, built by `agl projections rebuild`),
and writes the configuration into its ``triplet_config`` table, where a reader can see what built the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from projections.base import BACKGROUND_LINGER_MS, Envelope, Projection
from projections.copy_binary import BINARY_HEADER, BINARY_TRAILER, binary_bigint, binary_row, binary_text
from projections.errors import ProjectionError
from projections.migrations import Migration, load_package_migrations
from projections.triplet_adapter import AdapterConfig, Triplet, to_triplets
from projections.triplets_copy import TRIPLET_COLUMNS, text, triplet_line
from schemas import Event, RewardAssigned, RolloutEnqueued, SpanRecorded
from schemas.codec import encode_value
from schemas.topics import REWARDS, ROLLOUTS, SPANS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

TABLES = ("triplets", "triplet_spans", "triplet_rewards", "triplet_rollouts", "triplet_config")
#: The generated migration that records the configuration comes after every shipped one.
_CONFIG_MIGRATION = 900

SpanKey = tuple[str, str]  # (attempt_id, span_id)
OrderedReward = tuple[int, RewardAssigned]  # (log offset, event)


# -- computing a rollout's triplets (pure) -----------------------------------------------------------------------
def rollout_triplets(
    spans: Iterable[SpanRecorded], rewards: Sequence[OrderedReward], config: AdapterConfig
) -> list[tuple[str, list[Triplet]]]:
    """Every attempt's triplets, by attempt id, from all of one rollout's spans and rewards (in log order).

    A reward naming its attempt goes to that attempt. One without an attempt goes to the attempt holding the span
    or the response it links to, else to the newest attempt that has triplets (none: it waits for one).
    """
    by_attempt: dict[str, list[SpanRecorded]] = {}
    for span in spans:
        by_attempt.setdefault(span.attempt_id, []).append(span)
    own: dict[str, list[OrderedReward]] = {}
    loose: list[OrderedReward] = []
    for item in sorted(rewards, key=_offset):
        attempt = item[1].attempt_id
        if attempt is None:
            loose.append(item)
        else:
            own.setdefault(attempt, []).append(item)
    results = {a: to_triplets(s, [r for _, r in own.get(a, ())], config) for a, s in by_attempt.items()}
    if loose:
        for attempt, extra in _home_of_loose(loose, by_attempt, results).items():
            merged = sorted([*own.get(attempt, ()), *extra], key=_offset)
            results[attempt] = to_triplets(by_attempt[attempt], [r for _, r in merged], config)
    return sorted(results.items())


def _offset(item: OrderedReward) -> int:
    return item[0]


def _home_of_loose(
    loose: list[OrderedReward], by_attempt: dict[str, list[SpanRecorded]], results: dict[str, list[Triplet]]
) -> dict[str, list[OrderedReward]]:
    with_triplets = [a for a, found in results.items() if found]
    newest = max(with_triplets, key=lambda a: (max(s.sequence_id for s in by_attempt[a]), a), default=None)
    span_home = {s.span_id: a for a, spans in by_attempt.items() for s in spans}
    response_home = {t.response_id: a for a, found in results.items() for t in found if t.response_id}
    homes: dict[str, list[OrderedReward]] = {}
    for item in loose:
        reward = item[1]
        home = (span_home.get(reward.span_id) if reward.span_id else None) or (
            response_home.get(reward.response_id) if reward.response_id else None
        )
        home = home or newest
        if home is not None:
            homes.setdefault(home, []).append(item)
    return homes


# -- apply ------------------------------------------------------------------------------------------------------
class _Batch:
    """The batch's events by kind, and each touched rollout's stored facts merged with them (first copy wins)."""

    def __init__(self, envelopes: Sequence[Envelope]) -> None:
        self.spans: list[SpanRecorded] = []
        self.rewards: list[OrderedReward] = []
        self.enqueued: dict[str, RolloutEnqueued] = {}
        for envelope in envelopes:
            event = envelope.event
            kind = type(event)
            if kind is SpanRecorded:
                self.spans.append(event)  # type: ignore[arg-type]
            elif kind is RewardAssigned:
                self.rewards.append((envelope.offset, event))  # type: ignore[arg-type]
            elif kind is RolloutEnqueued:
                self.enqueued.setdefault(event.rollout_id, event)  # type: ignore[union-attr, arg-type]
        self.touched = sorted({s.rollout_id for s in self.spans} | {r.rollout_id for _, r in self.rewards})
        #: (rollout, attempt) of every span, and of every reward naming its attempt
        self.attempts = {(s.rollout_id, s.attempt_id) for s in self.spans} | {
            (r.rollout_id, r.attempt_id) for _, r in self.rewards if r.attempt_id is not None
        }


async def _store_rollouts(conn: AsyncConnection[Any], enqueued: dict[str, RolloutEnqueued], touched: list[str]) -> None:
    ids = sorted(enqueued)
    await conn.execute(
        "INSERT INTO triplet_rollouts (rollout_id, mode, resources_id) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) ON CONFLICT (rollout_id) DO NOTHING",
        (ids, [enqueued[i].mode for i in ids], [enqueued[i].resources_id for i in ids]),
    )
    # Triplets already written for a rollout enqueued only now (its spans came first) get its filters.
    recomputed = set(touched)
    if others := [i for i in ids if i not in recomputed]:
        await conn.execute(
            "UPDATE triplets t SET mode = r.mode, resources_id = r.resources_id FROM triplet_rollouts r "
            "WHERE t.rollout_id = r.rollout_id AND t.rollout_id = ANY(%b)",
            (others,),
        )


async def _stored_spans(
    conn: AsyncConnection[Any], rollouts: list[str], attempts: dict[str, set[str]]
) -> dict[str, dict[SpanKey, SpanRecorded]]:
    """The stored spans of every attempt of ``rollouts``, and of the ``attempts`` named (by rollout)."""
    out: dict[str, dict[SpanKey, SpanRecorded]] = {r: {} for r in (*rollouts, *attempts)}
    pairs = [(r, a) for r in sorted(attempts) for a in sorted(attempts[r])]
    queries: list[tuple[str, tuple[Any, ...]]] = []
    if rollouts:
        queries.append(
            ("SELECT rollout_id, attempt_id, span_id, body FROM triplet_spans WHERE rollout_id = ANY(%b)", (rollouts,))
        )
    if pairs:
        queries.append(
            (
                "SELECT s.rollout_id, s.attempt_id, s.span_id, s.body FROM triplet_spans s "
                "JOIN unnest(%b::text[], %b::text[]) AS t (rollout_id, attempt_id) USING (rollout_id, attempt_id)",
                ([r for r, _ in pairs], [a for _, a in pairs]),
            )
        )
    validate = SpanRecorded.model_validate_json
    for query, params in queries:
        cur = await conn.execute(query, params)
        for rollout_id, attempt_id, span_id, body in await cur.fetchall():
            out[rollout_id][(attempt_id, span_id)] = validate(body)
    return out


async def _stored_rewards(conn: AsyncConnection[Any], rollouts: list[str]) -> dict[str, dict[str, OrderedReward]]:
    out: dict[str, dict[str, OrderedReward]] = {r: {} for r in rollouts}
    cur = await conn.execute(
        "SELECT rollout_id, event_id::text, log_offset, body FROM triplet_rewards WHERE rollout_id = ANY(%b)",
        (rollouts,),
    )
    validate = RewardAssigned.model_validate_json
    for rollout_id, event_id, offset, body in await cur.fetchall():
        out[rollout_id][event_id] = (offset, validate(body))
    return out


async def _facts(conn: AsyncConnection[Any], rollouts: list[str]) -> dict[str, tuple[bytes, bytes]]:
    cur = await conn.execute(
        "SELECT rollout_id, mode, resources_id FROM triplet_rollouts WHERE rollout_id = ANY(%b)", (rollouts,)
    )
    return {r: (text(mode), text(resources)) for r, mode, resources in await cur.fetchall()}


async def _copy(conn: AsyncConnection[Any], table: str, columns: Sequence[str], lines: list[bytes]) -> None:
    """COPY text lines into ``table``."""
    if not lines:
        return
    async with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        await copy.write(b"\n".join(lines) + b"\n")


async def _copy_binary(conn: AsyncConnection[Any], table: str, columns: Sequence[str], rows: list[bytes]) -> None:
    """COPY binary rows into ``table`` (event bodies: no escaping in Python, no parsing in PostgreSQL)."""
    if not rows:
        return
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT binary)"
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        await copy.write(b"".join((BINARY_HEADER, *rows, BINARY_TRAILER)))


def _span_row(span: SpanRecorded) -> bytes:
    return binary_row(
        binary_text(span.rollout_id),
        binary_text(span.attempt_id),
        binary_text(span.span_id),
        binary_bigint(span.sequence_id),
        encode_value(span),
    )


def _reward_row(offset: int, reward: RewardAssigned) -> bytes:
    return binary_row(
        reward.event_id.bytes,
        binary_text(reward.rollout_id),
        binary_text(reward.attempt_id),
        binary_bigint(offset),
        encode_value(reward),
    )


async def apply_batch(envelopes: Sequence[Envelope], conn: AsyncConnection[Any], config: AdapterConfig) -> None:
    """Store the batch's new facts, then recompute and replace the triplets of every attempt it touched.

    An attempt is touched by a span of it or a reward naming it. A rollout holding a reward without an attempt is
    recomputed whole: where that reward lands depends on all its attempts.
    """
    batch = _Batch(envelopes)
    if batch.enqueued:
        await _store_rollouts(conn, batch.enqueued, batch.touched)
    if not batch.touched:
        return
    rewards = await _stored_rewards(conn, batch.touched)
    reward_rows: list[bytes] = []
    for offset, reward in batch.rewards:
        seen = rewards[reward.rollout_id]
        event_id = str(reward.event_id)
        if event_id not in seen:  # a copy of a stored reward event (or of one earlier in the batch) changes nothing
            seen[event_id] = (offset, reward)
            reward_rows.append(_reward_row(offset, reward))
    whole = [r for r in batch.touched if any(e.attempt_id is None for _, e in rewards[r].values())]
    whole_set = set(whole)
    attempts: dict[str, set[str]] = {}
    for key in batch.attempts:
        if key[0] not in whole_set:
            attempts.setdefault(key[0], set()).add(key[1])
    spans = await _stored_spans(conn, whole, attempts)
    span_rows: list[bytes] = []
    for span in batch.spans:
        known = spans[span.rollout_id]
        key = (span.attempt_id, span.span_id)
        if key not in known:  # a copy of a stored span (or of one earlier in the batch) changes nothing
            known[key] = span
            span_rows.append(_span_row(span))
    facts = await _facts(conn, batch.touched)
    triplet_lines: list[bytes] = []
    unknown = (b"\\N", b"\\N")
    for rollout_id in batch.touched:
        chosen = attempts.get(rollout_id)
        ordered = [x for x in rewards[rollout_id].values() if chosen is None or x[1].attempt_id in chosen]
        rollout = text(rollout_id)
        mode, resources_id = facts.get(rollout_id, unknown)
        for attempt_id, triplets in rollout_triplets(spans[rollout_id].values(), ordered, config):
            attempt = text(attempt_id)
            triplet_lines.extend(triplet_line(rollout, attempt, mode, resources_id, t) for t in triplets)
    if whole:
        await conn.execute("DELETE FROM triplets WHERE rollout_id = ANY(%b)", (whole,))
    if pairs := [(r, a) for r in sorted(attempts) for a in sorted(attempts[r])]:
        await conn.execute(
            "DELETE FROM triplets t USING unnest(%b::text[], %b::text[]) AS d (rollout_id, attempt_id) "
            "WHERE t.rollout_id = d.rollout_id AND t.attempt_id = d.attempt_id",
            ([r for r, _ in pairs], [a for _, a in pairs]),
        )
    await _copy(conn, "triplets", TRIPLET_COLUMNS, triplet_lines)
    await _copy_binary(conn, "triplet_spans", ("rollout_id", "attempt_id", "span_id", "sequence_id", "body"), span_rows)
    await _copy_binary(
        conn, "triplet_rewards", ("event_id", "rollout_id", "attempt_id", "log_offset", "body"), reward_rows
    )


# -- the projection, one per configuration -------------------------------------------------------------------------
def config_json(config: AdapterConfig) -> str:
    """The configuration as canonical JSON (sorted keys), as stored in ``triplet_config``."""
    return orjson.dumps(config.as_dict(), option=orjson.OPT_SORT_KEYS).decode()


def _config_migration(name: str, config: AdapterConfig) -> Migration:
    def literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    # Quoted literals (a migration is one SQL text): the name is a checked identifier, the JSON is ours.
    values = f"{literal(name)}, {literal(config_json(config))}::jsonb"
    sql = f"INSERT INTO triplet_config (projection, config) VALUES ({values})"  # noqa: S608
    return Migration(_CONFIG_MIGRATION, "adapter_config", sql)


def triplet_projection(name: str = "triplets", config: AdapterConfig | None = None, version: int = 1) -> Projection:
    """A triplet projection built with ``config`` (default: ``AdapterConfig()``).

    Another configuration is another read model: give it another ``name`` (kept side by side with the built-in
    one, e.g. ``triplets_sibling``) or another ``version`` of the same name (``agl projections rebuild`` replaces
    the rows), and make it known with ``projections.registry.register`` or an ``agl.projections`` entry point.
    """
    config = config if config is not None else AdapterConfig()

    async def apply(envelopes: Sequence[Envelope], conn: AsyncConnection[Any]) -> None:
        await apply_batch(envelopes, conn, config)

    types: frozenset[type[Event]] = frozenset({SpanRecorded, RewardAssigned, RolloutEnqueued})
    return Projection(
        name=name,
        version=version,
        topics=(SPANS, REWARDS, ROLLOUTS),
        event_types=types,
        migrations=(*load_package_migrations("projections", "sql/triplets"), _config_migration(name, config)),
        apply=apply,
        tables=TABLES,
        idempotent_types=types,
        # A batch reads a rollout's stored spans and writes its triplets back: no two instances may do it at once.
        lock_keys=True,
        linger_ms=BACKGROUND_LINGER_MS,
        description=f"LLM-call triplets with token ids and rewards (GET /v1/triplets); adapter {config_json(config)}",
    )


#: The built-in one, with the adapter's defaults. Bump its version when the adapter's output changes (its logic or
#: its defaults): `agl projections rebuild triplets` then rebuilds the rows, where the same version would refuse
#: the switch (the checksums of the rebuilt tables would differ from the live ones).
PROJECTION = triplet_projection()


class NotATripletProjection(ProjectionError):
    """A projection asked for as a triplet projection has no ``triplets`` table (a 400)."""

    http_status = 400
    exit_code = 2


def resolve(name: str) -> Projection:
    """The built-in triplet projection, or another known one by name (built with another configuration)."""
    if name == PROJECTION.name:
        return PROJECTION
    from projections.registry import get  # the registry imports this module for its built-ins

    found = get(name)
    if "triplets" not in found.tables:
        raise NotATripletProjection(f"projection {name!r} is not a triplet projection")
    return found
