"""The triplet adapter's trace tree: shapes, unfinished spans, corrupt parents, and hierarchy repair."""

from __future__ import annotations

import gc
import weakref

import pytest

from projections.triplet_adapter import AdapterConfig, to_messages, to_triplets
from projections.triplet_adapter.tree import VIRTUAL_ROOT_ID, Node, build_tree, repair
from schemas.spans import SpanRecorded
from tests.projections.test_triplet_adapter_support import at, llm, reward_event, sid, span

PADDING = 900


def shape(node: Node) -> tuple[str, list[object]]:
    """(id, children shapes), with span ids shortened to their number; padding spans are left out."""
    label = node.id if node.id == VIRTUAL_ROOT_ID else str(int(node.id, 16))
    return label, [
        shape(child) for child in node.children if child.id == VIRTUAL_ROOT_ID or int(child.id, 16) < PADDING
    ]


def padded(spans: list[SpanRecorded], pad: bool, parent: int = 1) -> list[SpanRecorded]:
    """With ``pad``, six long disjoint spans after everything else: they enclose nothing, but make the repair
    search scan by start instead of by length (it scans the shorter of the two), so both scans are tested."""
    if not pad:
        return spans
    return spans + [span(PADDING + i, "pad", 1000 + 100 * i, 1090 + 100 * i, parent=parent) for i in range(6)]


def test_a_single_root_is_the_tree() -> None:
    root = build_tree([span(2, "child", 1, 2, parent=1), span(1, "root", 0, 10), span(3, "child", 3, 4, parent=1)])
    assert root is not None
    assert shape(root) == ("1", [("2", []), ("3", [])])


def test_a_tree_is_freed_by_reference_counting_once_its_root_is_dropped() -> None:
    # The triplets projection pauses the collector while batches flow: a tree that needed it (a parent cycle)
    # would stay in memory, and be scanned, until the next collection.
    spans = [span(1, "root", 0, 10), span(2, "child", 1, 5, parent=1), span(3, "inner", 2, 3, parent=2)]
    enabled = gc.isenabled()
    gc.disable()
    try:
        root = build_tree([*spans, span(4, "orphan", 6, 7, parent=99)])  # a virtual root and a virtual parent
        assert root is not None
        repair(root)
        nodes = list(root.preorder())
        assert len(nodes) == 6 and nodes[0].parent is None
        assert all(any(child is node for child in node.parent.children) for node in nodes[1:] if node.parent)
        assert all(node.parent is not None for node in nodes[1:])
        leaf = weakref.ref(nodes[-1].span)  # a span lives as long as its node
        del root, nodes, spans
        assert leaf() is None
    finally:
        if enabled:
            gc.enable()


def test_several_roots_get_one_virtual_root_spanning_them() -> None:
    root = build_tree([span(1, "a", 5, 6), span(2, "b", 1, 3), span(3, "c", 2, 9, parent=2)])
    assert root is not None
    assert shape(root) == (VIRTUAL_ROOT_ID, [("1", []), ("2", [("3", [])])])
    assert (root.start_time, root.end_time) == (at(1), at(6))  # the roots' extent
    assert root.span is None


def test_a_missing_parent_becomes_a_virtual_node_spanning_its_children() -> None:
    # The session span (9) was lost; its two children still hang together under a stand-in for it.
    root = build_tree([span(1, "x", 2, 4, parent=9), span(2, "y", 6, 8, parent=9)])
    assert root is not None
    assert shape(root) == ("9", [("1", []), ("2", [])])
    assert root.span is None
    assert (root.start_time, root.end_time) == (at(2), at(8))


def test_a_missing_parent_beside_a_real_root_goes_under_the_virtual_root() -> None:
    root = build_tree([span(1, "root", 0, 1), span(2, "orphan", 3, 4, parent=9)])
    assert root is not None
    assert shape(root) == (VIRTUAL_ROOT_ID, [("1", []), ("9", [("2", [])])])


def test_no_spans_give_no_tree_and_no_triplets_even_with_rewards() -> None:
    assert build_tree([]) is None
    assert to_triplets([], [reward_event(1.0)]) == []
    assert to_messages([]) == []


def test_children_follow_sequence_order_not_input_order() -> None:
    spans = [span(3, "c", 0, 1, parent=1, seq=5), span(2, "b", 0, 1, parent=1, seq=7), span(1, "r", 0, 9, seq=1)]
    root = build_tree(spans)
    assert root is not None
    assert shape(root) == ("1", [("3", []), ("2", [])])


def test_a_span_id_seen_twice_keeps_its_first_copy() -> None:
    first = llm(1, 0, 1, response_id="r1")
    again = first.model_copy(update={"sequence_id": 40, "name": "openai.chat.completion.retry"})
    triplets = to_triplets([again, first], [])
    assert [(t.span_id, t.prompt_token_ids) for t in triplets] == [(sid(1), (1, 0))]
    root = build_tree([again, first])
    assert root is not None and root.name == "openai.chat.completion"


def test_unfinished_spans_end_at_the_latest_known_time() -> None:
    # The agent span is still open (no end) and so is the second call: neither raises; both end at 7 s, the
    # latest time known in the attempt, so the agent span still encloses its calls for the repair.
    spans = [
        span(1, "agent", 0, None, attributes={"agent.name": "solver"}),
        llm(2, 1, 2),
        llm(3, 3, None, parent=1),
        span(4, "tool", 5, 7, parent=1),
    ]
    triplets = to_triplets(spans, [], AdapterConfig(agent_match="solver"))
    assert [(t.span_id, t.agent_name, t.end_time) for t in triplets] == [
        (sid(2), "solver", at(2)),
        (sid(3), "solver", at(7)),
    ]


def test_an_end_before_the_start_is_taken_as_the_start() -> None:
    triplets = to_triplets([llm(1, 5, 3)], [])
    assert [(t.start_time, t.end_time) for t in triplets] == [(at(5), at(5))]


def test_a_parent_cycle_is_cut_at_its_first_span_in_order() -> None:
    # 1 -> 2 -> 1: no root at all. Agent Lightning fails ("No root spans found"); we cut at span 1.
    spans = [llm(1, 0, 5, parent=2, response_id="a"), llm(2, 1, 2, parent=1, response_id="b")]
    root = build_tree(spans)
    assert root is not None
    assert shape(root) == ("1", [("2", [])])
    assert [t.span_id for t in to_triplets(spans, [])] == [sid(1), sid(2)]


def test_a_self_parent_is_a_root() -> None:
    root = build_tree([span(1, "x", 0, 1, parent=1)])
    assert root is not None
    assert shape(root) == ("1", [])


# Repair ------------------------------------------------------------------------------------------------------


def test_repair_moves_calls_under_the_agent_inside_an_agentops_session_wrapper() -> None:
    # AgentOps wraps everything in a session span (one child), and its LLM spans hang off the run span while the
    # agent spans come from another instrumentation.
    spans = [
        span(1, "run_one.session", 0, 100),
        span(2, "run_one", 1, 99, parent=1),
        span(
            3,
            "planner.agent",
            10,
            50,
            parent=2,
            attributes={"agentops.span.kind": "agent", "operation.name": "planner"},
        ),
        llm(4, 15, 20, parent=2),
        llm(5, 30, 40, parent=2),
        span(6, "coder.agent", 60, 90, parent=2, attributes={"agentops.span.kind": "agent", "operation.name": "coder"}),
        llm(7, 70, 80, parent=2),
    ]
    root = build_tree(spans)
    assert root is not None
    repair(root)
    assert shape(root) == ("1", [("2", [("3", [("4", []), ("5", [])]), ("6", [("7", [])])])])
    triplets = to_triplets(spans, [])
    assert [(t.span_id, t.agent_name) for t in triplets] == [
        (sid(4), "planner"),
        (sid(5), "planner"),
        (sid(7), "coder"),
    ]
    only_planner = to_triplets(spans, [], AdapterConfig(agent_match="^planner$"))
    assert [t.span_id for t in only_planner] == [sid(4), sid(5)]
    # Without repair the calls sit beside the agents: no agent encloses them, so an agent filter keeps none.
    assert to_triplets(spans, [], AdapterConfig(agent_match="^planner$", repair_hierarchy=False)) == []
    assert [t.agent_name for t in to_triplets(spans, [], AdapterConfig(repair_hierarchy=False))] == [None] * 3


def test_repair_moves_proxy_spans_from_other_roots_under_the_enclosing_agent() -> None:
    # The proxy's LLM spans arrive as roots of their own: the virtual root's children are repaired.
    spans = [span(1, "agent", 0, 100, attributes={"agent.name": "solver"}), llm(2, 10, 20), llm(3, 30, 40)]
    triplets = to_triplets(spans, [], AdapterConfig(agent_match="solver"))
    assert [(t.span_id, t.agent_name) for t in triplets] == [(sid(2), "solver"), (sid(3), "solver")]


@pytest.mark.parametrize("pad", [False, True])
def test_repair_never_chooses_an_equal_interval(pad: bool) -> None:
    spans = [
        span(1, "root", 0, 2000),
        span(2, "agent", 10, 20, parent=1, attributes={"agent.name": "a"}),
        llm(3, 10, 20, parent=1),
    ]
    root = build_tree(padded(spans, pad))
    assert root is not None
    repair(root)
    assert shape(root) == ("1", [("2", []), ("3", [])])
    assert [t.agent_name for t in to_triplets(padded(spans, pad), [])] == [None]


@pytest.mark.parametrize("pad", [False, True])
def test_repair_chooses_the_tightest_encloser_and_the_first_of_equal_ones(pad: bool) -> None:
    spans = [
        span(1, "root", 0, 2000),
        span(2, "wide", 30, 60, parent=1),
        span(3, "tight-a", 35, 55, parent=1),
        span(4, "tight-b", 36, 56, parent=1),
        llm(5, 40, 50, parent=1),
    ]
    root = build_tree(padded(spans, pad))
    assert root is not None
    repair(root)
    # tight-a and tight-b both last 20 s and enclose the call: tight-a wins the tie (first in depth-first order);
    # wide (30 s) is the tightest encloser of both tight spans.
    assert shape(root) == ("1", [("2", [("3", [("5", [])]), ("4", [])])])


@pytest.mark.parametrize("pad", [False, True])
def test_repair_never_moves_a_span_under_its_own_descendant(pad: bool) -> None:
    # Clock skew: span 3 is a child of 2 but its interval strictly encloses 2's. Agent Lightning searches 2's own
    # subtree too, moves 2 under 3 and so cuts both off the tree (a cycle). We exclude the child's subtree.
    spans = [
        span(1, "root", 0, 2000),
        span(2, "step", 10, 20, parent=1),
        span(3, "skewed", 5, 30, parent=2),
        llm(4, 50, 60, parent=1),
    ]
    root = build_tree(padded(spans, pad))
    assert root is not None
    repair(root)
    assert shape(root) == ("1", [("2", [("3", [])]), ("4", [])])
    assert len(list(root.preorder())) == len(padded(spans, pad))


def test_repair_applies_below_the_first_node_with_several_children() -> None:
    # Agent Lightning repairs only the first node with several children (here the root, where nothing moves); the
    # call hanging beside its agent one level further down is repaired here too.
    spans = [
        span(1, "root", 0, 200),
        span(2, "warmup", 0, 10, parent=1),
        span(3, "episode", 20, 100, parent=1),
        span(4, "agent", 30, 60, parent=3, attributes={"agent.name": "deep"}),
        llm(5, 40, 50, parent=3),
    ]
    root = build_tree(spans)
    assert root is not None
    repair(root)
    assert shape(root) == ("1", [("2", []), ("3", [("4", [("5", [])])])])
    assert [t.agent_name for t in to_triplets(spans, [])] == ["deep"]


def test_repair_stops_a_level_once_one_child_is_left() -> None:
    spans = [
        span(1, "root", 0, 100),
        span(2, "agent", 5, 95, parent=1, attributes={"agent.name": "a"}),
        llm(3, 10, 20, parent=1),
    ]
    root = build_tree(spans)
    assert root is not None
    repair(root)
    assert shape(root) == ("1", [("2", [("3", [])])])


def test_a_moved_span_takes_its_place_in_sequence_order() -> None:
    # Call 2 (recorded first) hangs off the root; call 3 is already under the agent. Agent Lightning appends the
    # moved call last, so the triplets would come out 3, 2; here they stay in the order they were made.
    spans = [
        span(1, "agent", 0, 100, attributes={"agent.name": "a"}, seq=10),
        llm(2, 10, 20),
        llm(3, 30, 40, parent=1),
    ]
    root = build_tree(spans)
    assert root is not None
    repair(root)
    assert shape(root) == (VIRTUAL_ROOT_ID, [("1", [("2", []), ("3", [])])])
    assert [(t.index, t.span_id) for t in to_triplets(spans, [])] == [(0, sid(2)), (1, sid(3))]


def test_a_large_flat_trace_is_repaired_completely() -> None:
    # 2000 calls hanging off the root beside the agent span that encloses them all, plus 2000 spans enclosed by
    # nothing: every call moves under the agent, in order, and nothing else moves.
    spans = [span(1, "agent", 0, 100_000, attributes={"agent.name": "a"})]
    spans += [llm(2 + i, 10 * i + 1, 10 * i + 5, response_id=f"r{i}") for i in range(2000)]
    spans += [span(3000 + i, "late", 200_000 + 10 * i, 200_000 + 10 * i + 5) for i in range(2000)]
    root = build_tree(spans)
    assert root is not None
    repair(root)
    assert [child.id for child in root.children] == [sid(1)] + [sid(3000 + i) for i in range(2000)]
    assert [child.id for child in root.children[0].children] == [sid(2 + i) for i in range(2000)]
    triplets = to_triplets(spans, [], AdapterConfig(agent_match="^a$"))
    assert [t.span_id for t in triplets] == [sid(2 + i) for i in range(2000)]
