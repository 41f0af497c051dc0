"""to_triplets: one attempt's spans and rewards as triplets, in call order."""

from __future__ import annotations

from collections.abc import Sequence

from projections.triplet_adapter.calls import CallSearch, drop, find_calls
from projections.triplet_adapter.config import AdapterConfig
from projections.triplet_adapter.encodings import Reading, read_reward
from projections.triplet_adapter.payload import call_payload
from projections.triplet_adapter.rewards import assign
from projections.triplet_adapter.tree import Node, build_tree, repair
from projections.triplet_adapter.triplet import Triplet
from schemas.rewards import RewardAssigned
from schemas.spans import SpanRecorded

_DEFAULT = AdapterConfig()


def reward_spans(root: Node) -> list[tuple[Node, Reading]]:
    """Every span carrying a reward (or a malformed one), in the rollout's sequence order."""
    found = []
    for node in root.preorder():
        if node.span is not None:
            reading = read_reward(node.name, node.attributes)
            if reading is not None:
                found.append((node, reading))
    found.sort(key=lambda pair: pair[0].span.sequence_id if pair[0].span is not None else -1)
    return found


def analyse(
    spans: Sequence[SpanRecorded], config: AdapterConfig
) -> tuple[Node, list[tuple[Node, Reading]], CallSearch]:
    """The (repaired) tree, its reward spans and its calls: shared by triplets and messages."""
    root = build_tree(spans)
    assert root is not None, "analyse needs at least one span"
    if config.repair_hierarchy:
        repair(root)
    rewarded = reward_spans(root)
    search = find_calls(root, config, {node.id: reading for node, reading in rewarded})
    return root, rewarded, search


def to_triplets(
    spans: Sequence[SpanRecorded], rewards: Sequence[RewardAssigned], config: AdapterConfig = _DEFAULT
) -> list[Triplet]:
    """One attempt's spans (any order) and its reward events (in event order) as triplets, in call order.

    No spans gives an empty list, whatever the rewards: an attempt that recorded no LLM call has no triplet
    (Agent Lightning raises there). Rules for rewards: ``rewards.py``. Pure and deterministic.
    """
    if not spans:
        return []
    root, rewarded, search = analyse(spans, config)
    payloads = {call.id: call_payload(call, search.duplicates.get(call.id, ())) for call, _ in search.calls}
    if config.skip_empty_token_spans:
        drop(search, {key for key, read in payloads.items() if not (read.prompt_token_ids and read.response_token_ids)})
    awards = assign(root, search, rewarded, rewards, config.reward_match)
    triplets = []
    for index, (call, agent) in enumerate(search.calls):
        read = payloads[call.id]
        award = awards.get(call.id)
        triplets.append(
            Triplet(
                index=index,
                span_id=call.id,
                response_id=read.response_id,
                agent_name=agent,
                prompt_token_ids=read.prompt_token_ids,
                response_token_ids=read.response_token_ids,
                logprobs=read.logprobs,
                prompt=read.prompt,
                response=read.response,
                reward=award.value if award else None,
                reward_dimensions=dict(award.dimensions) if award else {},
                reward_source=award.source if award else None,
                reward_error=award.error if award else None,
                request=read.request,
                response_meta=read.response_meta,
                start_time=call.start_time,
                end_time=call.end_time,
                model=read.model,
                image_urls=read.image_urls,
            )
        )
    return triplets
