"""The trace tree of one attempt: spans by parent id, with virtual nodes where the trace has gaps, and repair.

Shape (as Agent Lightning's ``TraceTree.from_spans``):
- spans are ordered by ``sequence_id`` (the rollout's total order; clocks disagree), then start time and span id,
  and a span id seen twice keeps its first copy;
- a parent id that names no span becomes a virtual node spanning its children (the lost session span);
- several roots get one virtual root spanning them all (``virtual-root``);
- a parent cycle (a corrupt trace Agent Lightning loops or fails on) is cut at its first span in order, which
  becomes a root.

Times are integer microseconds since the epoch. A span without an end time (still running when exported) ends at
the latest time known in the attempt, and an end before the start is taken as the start: nothing here raises.
"""

from __future__ import annotations

import weakref
from bisect import bisect_right, insort
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from schemas._base import Json
from schemas.spans import SpanRecorded

VIRTUAL_ROOT_ID = "virtual-root"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NO_ATTRIBUTES: Mapping[str, Json] = {}


def micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


class Node:
    """A span (or a virtual stand-in, ``span is None``) with its children in sequence order.

    A node holds its parent by a weak reference: a tree has no reference cycle, so reference counting frees it as
    soon as its root is dropped. With parent links as strong references every tree was a cycle the collector had
    to find, and the triplets projection, which pauses the collector while batches flow, kept every tree of the
    last ten seconds alive: over 100,000 objects (nodes, spans, their ids), scanned in about 0.25 s whenever it
    collected. Hold the root for as long as you walk the tree.
    """

    __slots__ = (
        "__weakref__",
        "_parent",
        "attributes",
        "children",
        "end",
        "end_time",
        "id",
        "name",
        "seq",
        "span",
        "start",
        "start_time",
    )

    def __init__(self, node_id: str, span: SpanRecorded | None, start_time: datetime, end_time: datetime) -> None:
        self.id = node_id
        self.span = span
        self.name = span.name if span is not None else ""
        #: The place among siblings: the span's sequence id (a virtual node takes its first child's).
        self.seq = span.sequence_id if span is not None else -1
        self.attributes: Mapping[str, Json] = span.attributes if span is not None else _NO_ATTRIBUTES
        self.start_time = start_time
        self.end_time = end_time
        self.start = micros(start_time)
        self.end = micros(end_time)
        self.children: list[Node] = []
        self._parent: weakref.ref[Node] | None = None

    @property
    def parent(self) -> Node | None:
        return self._parent() if self._parent is not None else None

    def adopt(self, child: Node) -> None:
        child._parent = weakref.ref(self)
        self.children.append(child)

    def insert(self, child: Node) -> None:
        """Adopt a moved child at its place in sequence order (after equal ones)."""
        child._parent = weakref.ref(self)
        insort(self.children, child, key=lambda node: node.seq)

    def preorder(self) -> Iterator[Node]:
        """Depth first, children in order, without recursion (traces can be deep)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def __repr__(self) -> str:
        return f"Node({self.id}, {self.name!r}, children={len(self.children)})"


def ordered(spans: Sequence[SpanRecorded]) -> list[SpanRecorded]:
    """The spans in the rollout's order, each span id once (the event id breaks the last ties, so any input order
    gives the same result)."""
    seen: set[str] = set()
    unique: list[SpanRecorded] = []
    for span in sorted(spans, key=lambda s: (s.sequence_id, s.start_time, s.span_id, s.event_id)):
        if span.span_id not in seen:
            seen.add(span.span_id)
            unique.append(span)
    return unique


def build_tree(spans: Sequence[SpanRecorded]) -> Node | None:
    """The attempt's tree, or None when there are no spans."""
    if not spans:
        return None
    latest = max(moment for s in spans for moment in (s.start_time, s.end_time) if moment is not None)
    nodes: dict[str, Node] = {}
    for span in ordered(spans):
        end = span.end_time if span.end_time is not None else latest
        nodes[span.span_id] = Node(span.span_id, span, span.start_time, max(end, span.start_time))
    roots = _link(nodes)
    if len(roots) == 1:
        return roots[0]
    start = min(root.start_time for root in roots)
    end = max(root.end_time for root in roots)
    virtual_root = Node(VIRTUAL_ROOT_ID, None, start, end)
    for root in roots:
        virtual_root.adopt(root)
    return virtual_root


def _link(nodes: dict[str, Node]) -> list[Node]:
    """Attach every node to its parent; returns the roots in order of first appearance."""
    roots: list[Node] = []
    missing: dict[str, Node] = {}
    for node in list(nodes.values()):
        parent_id = node.span.parent_id if node.span is not None else None
        if parent_id is None or parent_id == node.id:
            roots.append(node)
        elif parent_id in nodes:
            nodes[parent_id].adopt(node)
        else:
            virtual = missing.get(parent_id)
            if virtual is None:
                virtual = missing[parent_id] = Node(parent_id, None, node.start_time, node.end_time)
                virtual.seq = node.seq
                roots.append(virtual)
            virtual.adopt(node)
    for virtual in missing.values():
        virtual.start_time = min(child.start_time for child in virtual.children)
        virtual.end_time = max(child.end_time for child in virtual.children)
        virtual.start, virtual.end = micros(virtual.start_time), micros(virtual.end_time)
    _cut_cycles(nodes, roots)
    return roots


def _cut_cycles(nodes: dict[str, Node], roots: list[Node]) -> None:
    reached = {id(node) for root in roots for node in root.preorder()}
    for node in nodes.values():
        if id(node) in reached:
            continue
        # Unreachable from every root means a parent cycle: the first span of it in order becomes a root.
        parent = node.parent
        if parent is not None:
            parent.children.remove(node)
            node._parent = None
        roots.append(node)
        reached.update(id(member) for member in node.preorder())


def repair(root: Node) -> None:
    """Re-parent spans that hang too high, at every level (Agent Lightning repairs only the first node with several
    children, and can create a cycle).

    Top down, at each node with several children, each child (in order) is moved under the node of that subtree
    whose interval encloses the child's most tightly (``start <= child.start``, ``end >= child.end``, strictly longer;
    an identical interval is never chosen), excluding the child's own subtree, so no cycle can form. Ties go to the
    first in depth-first order of the subtree as it was before this level's repair. A moved child takes its place
    among its new siblings in sequence order (Agent Lightning appends it last, which puts its call after later
    calls), and is repaired again when its new parent's level is reached. As in Agent Lightning, a
    level stops early once one child is left.
    """
    stack = [root]
    while stack:
        node = stack.pop()
        if len(node.children) > 1:
            _repair_level(node)
        stack.extend(reversed(node.children))


def _repair_level(node: Node) -> None:
    """Repair one node's children. The search for each child's tightest encloser is kept short: a prefix "reach"
    rules out most children in O(log n), and the rest scan whichever is smaller, the candidates starting no later
    than the child or those longer than it (the first that fits wins there, as they are in (length, rank) order).
    """
    candidates = [candidate for candidate in node.preorder() if candidate is not node]
    rank = {id(candidate): position for position, candidate in enumerate(candidates)}
    by_start = sorted(candidates, key=lambda c: c.start)  # stable: equal starts keep depth-first order
    starts = [candidate.start for candidate in by_start]
    by_length = sorted(candidates, key=lambda c: (c.end - c.start, rank[id(c)]))
    lengths = [candidate.end - candidate.start for candidate in by_length]
    reach = _reach(by_start)
    for child in list(node.children):
        if len(node.children) == 1:
            break
        bound = bisect_right(starts, child.start)
        if bound == 0:
            continue
        latest, holder, runner_up = reach[bound - 1]
        # The child is among the candidates: its own end must not count as reaching it.
        if (runner_up if holder is child else latest) < child.end:
            continue
        longer = bisect_right(lengths, child.end - child.start)
        if len(by_length) - longer < bound:
            parent = _first_fitting(child, by_length, longer)
        else:
            parent = _tightest(child, by_start, bound, rank)
        if parent is not None:
            node.children.remove(child)
            parent.insert(child)


def _reach(by_start: Sequence[Node]) -> list[tuple[int, Node | None, int]]:
    """For each prefix of the start-ordered candidates: the latest end, who holds it, and the runner-up end."""
    floor = -(2**63)
    latest, holder, runner_up = floor, None, floor
    reach: list[tuple[int, Node | None, int]] = []
    for candidate in by_start:
        if candidate.end > latest:
            latest, holder, runner_up = candidate.end, candidate, latest
        elif candidate.end > runner_up:
            runner_up = candidate.end
        reach.append((latest, holder, runner_up))
    return reach


def _first_fitting(child: Node, by_length: Sequence[Node], first: int) -> Node | None:
    """The first of ``by_length[first:]`` (all strictly longer than the child) that encloses it."""
    for position in range(first, len(by_length)):
        candidate = by_length[position]
        if candidate.start <= child.start and candidate.end >= child.end and not _inside(candidate, child):
            return candidate
    return None


def _tightest(child: Node, candidates: Sequence[Node], bound: int, rank: Mapping[int, int]) -> Node | None:
    """The tightest strict encloser among ``candidates[:bound]`` (those starting no later than the child)."""
    length = child.end - child.start
    best: Node | None = None
    best_key = (0, 0)
    for position in range(bound):
        candidate = candidates[position]
        span = candidate.end - candidate.start
        if candidate.end < child.end or span <= length:
            continue
        key = (span, rank[id(candidate)])
        if (best is None or key < best_key) and not _inside(candidate, child):
            best, best_key = candidate, key
    return best


def _inside(node: Node, ancestor: Node) -> bool:
    current: Node | None = node
    while current is not None:
        if current is ancestor:
            return True
        current = current.parent
    return False
