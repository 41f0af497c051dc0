"""Binding rewards to an attempt's LLM calls.

The rules, in the order they apply:

1. **Links first.** A reward that names a call binds to it: a ``reward.assigned`` event whose ``span_id`` is the
   call's span (or a duplicate span of that call) or whose ``response_id`` is the call's ``gen_ai.response.id``,
   and a reward span whose ``agentlightning.link.{i}`` has ``key_match`` ``span_id`` or ``response_id`` (also
   ``gen_ai.response.id``) naming it. Reward spans are applied in trace order, then events in event order; the
   last one bound to a call wins. A link naming a call that yields no triplet (outside the agent, inside a
   reward, skipped for empty token ids) drops the reward: it is not moved to another call. A link naming nothing
   of the kind (a span not in the trace, or an agent span) is ignored and the reward is treated as unlinked.
2. **Mirrors are skipped.** An event whose ``span_id`` names a reward span of the trace is that span's mirror
   (``agl.emit_reward`` writes both when tracing is on): the span is used, the event is not.
3. **Positional.** Unlinked reward spans are matched by the configured policy, exactly as Agent Lightning does:
   ``first_occurrence``: in start-time order (ties in depth-first order), each reward goes to the most recent
   call that ended no later than the reward started and has no reward yet; ``first_sibling``: the same among the
   earlier siblings under one parent. A call bound by link counts as taken, so the reward moves on as if it had
   one. A malformed reward still takes its call, which then carries ``reward_error`` and no value.
4. **Final.** The last unlinked event in event order is the attempt's final reward: it overwrites the last
   triplet's reward unless that triplet is link-bound (then it is dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from projections.triplet_adapter.calls import CallSearch
from projections.triplet_adapter.config import RewardMatch
from projections.triplet_adapter.encodings import Reading
from projections.triplet_adapter.tree import Node
from projections.triplet_adapter.triplet import RewardSource
from schemas.rewards import RewardAssigned

SPAN_KEYS = frozenset({"span_id"})
RESPONSE_KEYS = frozenset({"response_id", "gen_ai.response.id"})


@dataclass(frozen=True, slots=True)
class Award:
    value: float | None
    dimensions: dict[str, float]
    source: RewardSource
    error: str | None = None


class _Dropped:
    """A link to a call without a triplet."""


DROPPED = _Dropped()


def _resolve(search: CallSearch, span_id: str | None, response_id: str | None) -> Node | _Dropped | None:
    if span_id is not None:
        if span_id in search.by_span:
            return search.by_span[span_id]
        if span_id in search.dropped_spans:
            return DROPPED
    if response_id is not None:
        if response_id in search.by_response:
            return search.by_response[response_id]
        if response_id in search.dropped_responses:
            return DROPPED
    return None


def _resolve_links(search: CallSearch, links: Iterable[tuple[str, str]]) -> Node | _Dropped | None:
    found: Node | _Dropped | None = None
    for key, value in links:
        if key in SPAN_KEYS:
            target = _resolve(search, value, None)
        elif key in RESPONSE_KEYS:
            target = _resolve(search, None, value)
        else:
            continue
        if isinstance(target, Node):
            return target
        found = found or target
    return found


def assign(
    root: Node,
    search: CallSearch,
    reward_spans: Sequence[tuple[Node, Reading]],
    events: Sequence[RewardAssigned],
    policy: RewardMatch,
) -> dict[str, Award]:
    """The award of each call (by span id) that has one."""
    awards: dict[str, Award] = {}
    positional: list[tuple[Node, Reading]] = []
    for node, reading in reward_spans:
        target = _resolve_links(search, reading.links)
        if isinstance(target, Node):
            awards[target.id] = Award(reading.value, reading.dimensions, "link", reading.error)
        elif target is None:
            positional.append((node, reading))
    final: RewardAssigned | None = None
    mirrored = {node.id for node, _ in reward_spans}
    for event in events:
        if event.span_id is not None and event.span_id in mirrored:
            continue
        target = _resolve(search, event.span_id, event.response_id)
        if isinstance(target, Node):
            awards[target.id] = Award(event.value, _dimensions(event), "link")
        elif target is None:
            final = event
    calls = [call for call, _ in search.calls]
    match = _first_sibling if policy == "first_sibling" else _first_occurrence
    matched = match(root, calls, positional, awards)
    for call_id, reading in matched.items():
        awards[call_id] = Award(reading.value, reading.dimensions, "positional", reading.error)
    if final is not None and calls:
        last = calls[-1].id
        if last not in awards or awards[last].source != "link":
            awards[last] = Award(final.value, _dimensions(final), "final")
    return awards


def _dimensions(event: RewardAssigned) -> dict[str, float]:
    return {event.name: event.value, **event.dimensions}


def _first_occurrence(
    root: Node, calls: Sequence[Node], rewards: Sequence[tuple[Node, Reading]], taken: Mapping[str, Award]
) -> dict[str, Reading]:
    if not rewards or not calls:
        return {}
    call_ids = {call.id for call in calls}
    readings = {node.id: reading for node, reading in rewards}
    relevant = [node for node in root.preorder() if node.id in call_ids or node.id in readings]
    relevant.sort(key=lambda node: node.start)  # stable: ties keep depth-first order, as Agent Lightning
    return _match(relevant, call_ids, readings, taken, {})


def _first_sibling(
    root: Node, calls: Sequence[Node], rewards: Sequence[tuple[Node, Reading]], taken: Mapping[str, Award]
) -> dict[str, Reading]:
    matched: dict[str, Reading] = {}
    if not rewards or not calls:
        return matched
    call_ids = {call.id for call in calls}
    readings = {node.id: reading for node, reading in rewards}
    for node in root.preorder():
        if len(node.children) > 1:
            _match(node.children, call_ids, readings, taken, matched)
    return matched


def _match(
    order: Iterable[Node],
    call_ids: set[str],
    readings: Mapping[str, Reading],
    taken: Mapping[str, Award],
    matched: dict[str, Reading],
) -> dict[str, Reading]:
    """Agent Lightning's loop: each reward goes to the latest earlier-ended call without a reward."""
    open_calls: list[Node] = []
    for node in order:
        if node.id in call_ids:
            open_calls.append(node)
        reading = readings.get(node.id)
        if reading is None:
            continue
        for call in reversed(open_calls):
            if call.end > node.start or call.id in taken or call.id in matched:
                continue
            matched[call.id] = reading
            break
    return matched
