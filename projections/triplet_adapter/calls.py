"""Finding an attempt's LLM calls in the tree (payloads are read in ``payload.py``).

Matching follows Agent Lightning's ``TraceTree.find_llm_calls``, depth first:
- a span is a call when its name matches ``llm_call_match``, it is inside a matching agent (any place when
  ``agent_match`` is None; when set, a call under no matching agent span is dropped, and entering a non-matching
  agent span leaves the matching subtree), and (with ``exclude_llm_call_in_reward``) not inside a reward span or an
  ``agentlightning.operation`` named ``agentlightning.reward`` (an LLM judge);
- with ``dedup_llm_call``, a matching span inside a call without a response id of its own is the same call (the
  client's span around the HTTP span), and a response id already seen is counted once. Agent Lightning keeps the
  response-id dedupe even when ``dedup_llm_call`` is off; here the option turns both off.
Spans dropped as duplicates remember the call they repeat, so a reward linked to either binds to the call, and
lend it the token ids and logprobs it lacks (``payload.call_payload``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from projections.triplet_adapter.attributes import first_string
from projections.triplet_adapter.config import AdapterConfig
from projections.triplet_adapter.encodings import Reading, is_reward_operation
from projections.triplet_adapter.payload import RESPONSE_ID_KEYS
from projections.triplet_adapter.tree import Node
from schemas._base import Json


def agent_name(node: Node) -> str | None:
    """The agent a span stands for, from the attributes each framework writes (Agent Lightning's list, in order,
    plus the GenAI semantic conventions' ``gen_ai.agent.name``). Non-string values are skipped."""
    attributes = node.attributes
    if not attributes:
        return None
    candidates: tuple[Json, ...] = (
        attributes.get("agent.name"),  # OpenAI Agents SDK
        attributes.get("gen_ai.agent.name"),  # GenAI semantic conventions
        attributes.get("operation.name") if attributes.get("agentops.span.kind") == "agent" else None,  # AgentOps
        attributes.get("recipient_agent_type"),  # AutoGen
        attributes.get("langchain.chain.type"),  # LangGraph
        attributes.get("executor.id"),  # agent-framework
        attributes.get("agentlightning.operation.input.name") if attributes.get("type") == "agent" else None,  # Weave
        attributes.get("lc_name") if node.name.startswith("langchain.Chain.") else None,  # Weave + LangChain
    )
    for candidate in candidates:
        if isinstance(candidate, str):
            return candidate
    return None


class _Context(NamedTuple):
    matching: bool  # inside a matching agent subtree (or anywhere, when agent_match is None)
    agent: str | None
    in_reward: bool
    call: Node | None  # the nearest enclosing call, for nested-span dedupe


@dataclass
class CallSearch:
    """The calls kept (in depth-first order, with their agent names), and what the other name matches became."""

    calls: list[tuple[Node, str | None]] = field(default_factory=list)
    #: span id -> the kept call it is (the call itself, or a duplicate span of it).
    by_span: dict[str, Node] = field(default_factory=dict)
    #: response id -> the kept call.
    by_response: dict[str, Node] = field(default_factory=dict)
    #: spans and response ids of name matches that yield no triplet (outside the agent, inside a reward, skipped).
    dropped_spans: set[str] = field(default_factory=set)
    dropped_responses: set[str] = field(default_factory=set)
    #: kept call's span id -> its duplicate spans, in depth-first order (they may hold the token ids it lacks).
    duplicates: dict[str, list[Node]] = field(default_factory=dict)

    def alias(self, node: Node, call: Node) -> None:
        self.by_span[node.id] = call
        self.duplicates.setdefault(call.id, []).append(node)


def find_calls(root: Node, config: AdapterConfig, readings: Mapping[str, Reading]) -> CallSearch:
    llm_call = re.compile(config.llm_call_match)
    agent_match = re.compile(config.agent_match) if config.agent_match is not None else None
    search = CallSearch()
    stack = [(root, _Context(agent_match is None, None, False, None))]
    while stack:
        node, context = stack.pop()
        if node.span is not None and llm_call.search(node.name):
            context = _consider(node, context, config, search)
        name = agent_name(node)
        if name is not None:
            matching = agent_match is None or agent_match.search(name) is not None
            context = context._replace(matching=matching, agent=name if matching else None)
        if (
            config.exclude_llm_call_in_reward
            and not context.in_reward
            and (node.id in readings or is_reward_operation(node.name, node.attributes))
        ):
            context = context._replace(in_reward=True)
        stack.extend((child, context) for child in reversed(node.children))
    return search


def _consider(node: Node, context: _Context, config: AdapterConfig, search: CallSearch) -> _Context:
    """Keep, alias or drop one name match; returns the context its children see."""
    response_id = first_string(node.attributes, RESPONSE_ID_KEYS)
    if not context.matching or context.in_reward:
        search.dropped_spans.add(node.id)
        if response_id is not None:
            search.dropped_responses.add(response_id)
        return context
    if config.dedup_llm_call:
        if response_id is not None and response_id in search.by_response:
            search.alias(node, search.by_response[response_id])
            return context
        if response_id is None and context.call is not None:
            search.alias(node, context.call)
            return context
    search.calls.append((node, context.agent))
    search.by_span[node.id] = node
    if response_id is not None:
        search.by_response.setdefault(response_id, node)
    return context._replace(call=node) if config.dedup_llm_call else context


def drop(search: CallSearch, skipped: set[str]) -> None:
    """Forget kept calls (``skip_empty_token_spans``): links to them now name calls without a triplet."""
    if not skipped:
        return
    search.calls = [(call, agent) for call, agent in search.calls if call.id not in skipped]
    for span_id, call in list(search.by_span.items()):
        if call.id in skipped:
            del search.by_span[span_id]
            search.dropped_spans.add(span_id)
    for response_id, call in list(search.by_response.items()):
        if call.id in skipped:
            del search.by_response[response_id]
            search.dropped_responses.add(response_id)
