"""The spans read model and its routes: first copy wins in any arrival order, rebuilds equal, keyset pages, trees.

Every test runs the real projection worker on the real broker and PostgreSQL; the routes are read through the API
in process (real lifespan), with spans recorded through ``POST /v1/spans`` and read back after its position token.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest

from consumers.rebuild import Rebuild
from consumers.worker import ProjectionWorker
from projections.routes.spans import MAX_DEPTH, build_tree, decode_cursor, encode_cursor
from projections.spans import PROJECTION as SPANS
from projections.spans import SpanKey, SpanRow, attribute_values
from schemas import Event, RecordedSpan, SpanRecorded, SpansRecorded, SpanStatus
from tests.consumers.helpers import fetch_all, publish, running, wait_for_total
from tests.fixtures.events import T0
from tests.projections.test_routes import api  # noqa: F401 - `api` is a fixture

pytestmark = [pytest.mark.kafka, pytest.mark.pg]
TRACE = "0af7651916cd43dd8448eb211c80319c"


def worker(kafka_bootstrap: str, pg_url: str, prefix: str) -> ProjectionWorker:
    return ProjectionWorker(SPANS, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False)


def sid(n: int) -> str:
    return f"{n:016x}"


def event(attempt: str, seq: int, n: int, **kw: Any) -> SpanRecorded:
    fields: dict[str, Any] = {
        "rollout_id": "ro-fold",
        "attempt_id": attempt,
        "sequence_id": seq,
        "trace_id": TRACE,
        "span_id": sid(n),
        "name": "step",
        "start_time": T0 + timedelta(seconds=seq),
        "end_time": T0 + timedelta(seconds=seq + 1),
        "status": SpanStatus(status_code="OK"),
        "attributes": {"n": n},
    }
    return SpanRecorded(**(fields | kw))


def body(
    attempt: str, seq: int, n: int, *, rollout: str = "ro-a", parent: int | None = None, **kw: Any
) -> dict[str, Any]:
    """A ``POST /v1/spans`` item, numbered by the client so the expected order is known."""
    return {
        "rollout_id": rollout,
        "attempt_id": attempt,
        "sequence_id": seq,
        "trace_id": TRACE,
        "span_id": sid(n),
        "parent_id": None if parent is None else sid(parent),
        "name": "step",
        "start_time": (T0 + timedelta(seconds=kw.pop("second", seq))).isoformat(),
        "attributes": {"n": n},
    } | kw


async def post(api, spans: list[dict[str, Any]]) -> str:  # noqa: F811
    answer = await api.post("/v1/spans", json=spans)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["position"])


async def pages(api, path: str, params: dict[str, Any], limit: int) -> list[list[dict[str, Any]]]:  # noqa: F811
    """Every page of a list read, following ``next_cursor``."""
    out: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        answer = await api.get(path, params=params | {"limit": limit} | ({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        page = answer.json()
        out.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        assert len(out) < 1000, "pagination does not end"


# -- the fold -------------------------------------------------------------------------------------------------------
async def test_each_span_is_stored_once_the_first_copy_winning_and_a_rebuild_is_equal(
    kafka_bootstrap, kafka_topics, pg_url
):
    spans = [event("at-1", seq, seq) for seq in range(1, 9)]
    spans += [event("at-2", seq, 100 + seq) for seq in range(20, 26)]
    late_low = event("at-2", 12, 199, start_time=T0 - timedelta(seconds=5))  # moves its attempt's first span
    impostor = event("at-1", 99, 3, name="impostor", attributes={"n": -1})  # same key as a span before it
    hostile = event("at-1", 50, 50, name="nul\x00name", attributes={"k\x00": "v\x00", "big": 2**70, "ok": [1, "x"]})
    random.Random(7).shuffle(spans)
    spans.sort(key=lambda e: e.span_id != sid(3))  # the span the impostor copies comes in the first batch
    first: list[Event] = [*spans[:7], spans[3], hostile]  # an exact copy too
    second: list[Event] = [impostor, *spans[7:], late_low, spans[0], hostile]
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        await publish(kafka_bootstrap, kafka_topics, first)
        await wait_for_total(pg_url, "spans_g1", len(first))
        await publish(kafka_bootstrap, kafka_topics, second)
        await wait_for_total(pg_url, "spans_g1", len(first) + len(second))
    rows = await fetch_all(
        pg_url, "SELECT attempt_id, span_id, sequence_id, name, attributes FROM spans_g1.spans ORDER BY 1, 2"
    )
    assert await fetch_all(pg_url, "SELECT error FROM dead_letters") == []
    assert len(rows) == len(spans) + 2  # every key once: the copies changed nothing
    by_key = {(a, s): (seq, name, attributes) for a, s, seq, name, attributes in rows}
    assert by_key["at-1", sid(3)] == (3, "step", {"n": 3})  # the impostor came later: the first copy stays
    assert by_key["at-1", sid(50)] == (50, "nul\ufffdname", {"k\ufffd": "v\ufffd", "big": 2**70, "ok": [1, "x"]})
    attempts = await fetch_all(pg_url, "SELECT * FROM spans_g1.span_attempts ORDER BY first_sequence_id")
    assert [(a, seq, start, count) for _, a, seq, start, count in attempts] == [
        ("at-1", 1, T0 + timedelta(seconds=1), 9),
        ("at-2", 12, T0 - timedelta(seconds=5), 7),
    ]
    before = await fetch_all(pg_url, "SELECT t::text FROM spans_g1.spans t ORDER BY attempt_id, span_id")
    # Rebuilt from the log in small batches (copies now land in other batches than their originals): equal tables.
    rebuild = Rebuild(SPANS, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, batch_size=3)
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        result = await rebuild.run(asyncio.Event())
    assert result.switched and set(result.checksums) == {"spans", "span_attempts"}
    assert all(new == old for new, old in result.checksums.values()), result.checksums
    assert await fetch_all(pg_url, "SELECT t::text FROM spans_g2.spans t ORDER BY attempt_id, span_id") == before


async def test_a_spans_recorded_is_stored_as_its_spans_once(kafka_bootstrap, kafka_topics, pg_url):
    # The same six spans, one record each under ro-one and one spans.recorded under ro-all (a finish report's),
    # which a relay then publishes again (a copy: the same event id).
    alone = [event("at-1", seq, seq, rollout_id="ro-one") for seq in range(1, 7)]
    spans = tuple(RecordedSpan(**e.model_dump(include=set(RecordedSpan.model_fields))) for e in alone)
    batch = SpansRecorded(rollout_id="ro-all", attempt_id="at-1", spans=spans)
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        await publish(kafka_bootstrap, kafka_topics, [*alone, batch, batch])
        await wait_for_total(pg_url, "spans_g1", len(alone) + 2)
    columns = "span_id, sequence_id, trace_id, name, start_time, end_time, status_code, attributes, events, links"
    query = f"SELECT {columns} FROM spans_g1.spans WHERE rollout_id = %s ORDER BY 1"  # noqa: S608 - constant
    one, everything = [await fetch_all(pg_url, query, (rollout,)) for rollout in ("ro-one", "ro-all")]
    assert len(one) == 6 and everything == one
    # Each span keeps the id of the member it was stored as, and its attempt counts it once.
    ids = await fetch_all(pg_url, "SELECT span_id, event_id FROM spans_g1.spans WHERE rollout_id = 'ro-all'")
    assert dict(ids) == {m.span_id: m.event_id for m in batch.members()}
    counts = await fetch_all(pg_url, "SELECT rollout_id, span_count FROM spans_g1.span_attempts ORDER BY 1")
    assert counts == [("ro-all", 6), ("ro-one", 6)]
    assert await fetch_all(pg_url, "SELECT error FROM dead_letters") == []


# -- the list -------------------------------------------------------------------------------------------------------
async def test_pages_cover_every_span_once_in_attempt_then_sequence_order(api, kafka_bootstrap, kafka_topics, pg_url):  # noqa: F811
    # "at-z" starts first (lower sequence ids), so it comes first although its id sorts last. Ties in sequence_id
    # are broken by start_time, then span_id.
    spans = [body("at-z", seq, seq) for seq in range(0, 23)]
    spans += [body("at-b", 30 + i // 3, 200 + i, second=5 - i % 3) for i in range(17)]
    spans += [body("at-z", 5, 500, second=5), body("at-z", 5, 499, second=5)]
    spans += [body("at-x", 0, 600, rollout="ro-other")]
    random.Random(3).shuffle(spans)
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        token = await post(api, spans[:20])
        token = await post(api, spans[20:])
        ready = await api.get("/v1/rollouts/ro-a/spans", params={"after": token, "limit": 1})
        assert ready.status_code == 200 and len(ready.json()["items"]) == 1
    mine = [s for s in spans if s["rollout_id"] == "ro-a"]
    rank = {"at-z": 0, "at-b": 1}
    expected = [s["span_id"] for s in sorted(mine, key=lambda s: (rank[s["attempt_id"]], s["sequence_id"],
                                                                 s["start_time"], s["span_id"]))]  # fmt: skip
    attempt_of = {s["span_id"]: s["attempt_id"] for s in mine}
    for limit in (1, 7, 42, 1000):
        got = await pages(api, "/v1/rollouts/ro-a/spans", {}, limit)
        assert [s["span_id"] for page in got for s in page] == expected, limit
        assert all(len(page) == limit for page in got[:-1]) and len(got) == -(-len(expected) // limit)
    one = (await api.get("/v1/rollouts/ro-a/spans", params={"limit": 1})).json()["items"][0]
    assert one == {
        "rollout_id": "ro-a", "attempt_id": "at-z", "sequence_id": 0, "trace_id": TRACE, "span_id": sid(0),
        "parent_id": None, "name": "step", "kind": "INTERNAL", "start_time": "2025-01-02T03:04:05.678000Z",
        "end_time": None, "status": {"status_code": "UNSET", "description": None}, "attributes": {"n": 0},
        "events": [], "links": [], "resource": {},
    }  # fmt: skip
    # One attempt; a filter, paginated: the cursor continues the filtered order.
    only_b = await pages(api, "/v1/rollouts/ro-a/spans", {"attempt_id": "at-b"}, 5)
    assert [s["span_id"] for p in only_b for s in p] == [i for i in expected if attempt_of[i] == "at-b"]
    odd_numbers = [str(s["attributes"]["n"]) for s in mine if s["attributes"]["n"] % 2]
    odd = await pages(api, "/v1/rollouts/ro-a/spans", {"attr.n": odd_numbers}, 4)
    assert [s["span_id"] for p in odd for s in p] == [i for i in expected if int(i, 16) % 2]
    # A rollout without spans (unknown, or none yet) is an empty page.
    assert (await api.get("/v1/rollouts/ro-none/spans")).json() == {"items": [], "next_cursor": None}


async def test_name_and_attribute_filters(api, kafka_bootstrap, kafka_topics, pg_url):  # noqa: F811
    llm = {"gen_ai.request.model": "smol", "gen_ai.usage.input_tokens": 12, "stream": True, "tag": "1"}
    spans = [
        body("at-1", 1, 1, name="agent.run"),
        body("at-1", 2, 2, name="openai.chat.completion", attributes=llm),
        body("at-1", 3, 3, name="chat smol", attributes=llm | {"gen_ai.usage.input_tokens": 30, "tag": 1}),
        body("at-1", 4, 4, name="chat other", attributes={"gen_ai.request.model": "other", "stream": "true"}),
        body("at-1", 5, 5, name="agentlightning.annotation", attributes={"agentlightning.reward.0.value": 0.5}),
    ]
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        token = await post(api, spans)

        async def names(**params: Any) -> list[str]:
            answer = await api.get("/v1/rollouts/ro-a/spans", params={"after": token, **params})
            assert answer.status_code == 200, answer.text
            return [s["name"] for s in answer.json()["items"]]

        assert await names(name="chat smol") == ["chat smol"]
        assert await names(name=["agent.run", "chat other", "nope"]) == ["agent.run", "chat other"]
        assert await names(name_prefix="chat ") == ["chat smol", "chat other"]
        assert await names(name_prefix="%") == []  # no LIKE pattern: a prefix is literal
        assert await names(**{"attr.gen_ai.request.model": "smol"}) == ["openai.chat.completion", "chat smol"]
        assert await names(**{"attr.gen_ai.usage.input_tokens": "30"}) == ["chat smol"]
        assert await names(**{"attr.stream": "true"}) == ["openai.chat.completion", "chat smol", "chat other"]
        assert await names(**{"attr.tag": "1"}) == ["openai.chat.completion", "chat smol"]
        assert await names(**{"attr.tag": '"1"'}) == ["openai.chat.completion"]  # quoted: the string only
        assert await names(**{"attr.agentlightning.reward.0.value": "0.50"}) == ["agentlightning.annotation"]
        both = {"attr.gen_ai.request.model": "smol", "attr.stream": "true", "name_prefix": "chat"}
        assert await names(**both) == ["chat smol"]
        assert await names(**{"attr.missing": "x"}) == []


# -- the trace ------------------------------------------------------------------------------------------------------
def shape(nodes: list[dict[str, Any]]) -> list[Any]:
    """A tree as nested (span number, matched, children) tuples."""
    return [(int(n["span_id"], 16), n["matched"], shape(n["children"])) for n in nodes]


async def test_the_trace_is_a_tree_per_attempt_with_orphans_and_pruned_by_filters(
    api,  # noqa: F811
    kafka_bootstrap,
    kafka_topics,
    pg_url,
):
    spans = [
        body("at-1", 1, 1),  # root
        body("at-1", 2, 2, parent=1, name="chat a"),
        body("at-1", 3, 3, parent=2, name="tool"),
        body("at-1", 4, 4, parent=1, name="chat b"),
        body("at-1", 5, 5, parent=77),  # its parent was never recorded
        body("at-1", 6, 6, parent=5, name="chat c"),
        body("at-1", 7, 7),  # a second root
        body("at-1", 8, 8, parent=9),  # 8 and 9 are each other's parent
        body("at-1", 9, 9, parent=8),
        body("at-1", 10, 10, parent=10),  # its own parent
        body("at-2", 20, 1),  # the same span id in another attempt is another span
        body("at-2", 21, 2, parent=1, name="chat a"),
    ]
    chain = [body("at-deep", 100 + i, 1000 + i, rollout="ro-deep", parent=None if i == 0 else 999 + i)
             for i in range(MAX_DEPTH + 5)]  # fmt: skip
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        await post(api, spans[6:])
        token = await post(api, [*spans[:6], *chain])
        trace = (await api.get("/v1/rollouts/ro-a/trace", params={"after": token})).json()
        assert trace["rollout_id"] == "ro-a" and not trace["truncated"]
        first, second = trace["attempts"]
        assert (first["attempt_id"], first["span_count"], second["attempt_id"]) == ("at-1", 10, "at-2")
        assert shape(first["roots"]) == [(1, True, [(2, True, [(3, True, [])]), (4, True, [])]), (7, True, [])]
        assert shape(first["orphans"]) == [(5, True, [(6, True, [])]), (8, True, [(9, True, [])]), (10, True, [])]
        assert first["continued"] == [] and shape(second["roots"]) == [(1, True, [(2, True, [])])]
        assert first["roots"][0]["children"][0]["attributes"] == {"n": 2}
        # Pruned to the matches and their ancestors; the ancestors say they did not match.
        pruned = (await api.get("/v1/rollouts/ro-a/trace", params={"name_prefix": "chat", "attempt_id": "at-1"})).json()
        (only,) = pruned["attempts"]
        assert shape(only["roots"]) == [(1, False, [(2, True, []), (4, True, [])])]
        assert shape(only["orphans"]) == [(5, False, [(6, True, [])])]
        by_attr = (await api.get("/v1/rollouts/ro-a/trace", params={"attr.n": "3"})).json()["attempts"]
        assert [shape(a["roots"]) for a in by_attr] == [[(1, False, [(2, False, [(3, True, [])])])], []]
        # Bounded: the first spans in order, said to be truncated.
        cut = (await api.get("/v1/rollouts/ro-a/trace", params={"max_spans": 3})).json()
        assert cut["truncated"] and shape(cut["attempts"][0]["roots"]) == [(1, True, [(2, True, [(3, True, [])])])]
        # A branch deeper than MAX_DEPTH continues in its own list instead of failing to encode.
        deep = (await api.get("/v1/rollouts/ro-deep/trace")).json()["attempts"][0]
        depth, node = 1, deep["roots"][0]
        while node["children"]:
            depth, node = depth + 1, node["children"][0]
        (rest,) = deep["continued"]
        assert depth == MAX_DEPTH and rest["parent_id"] == node["span_id"]
        assert (await api.get("/v1/rollouts/ro-none/trace")).json() == {
            "rollout_id": "ro-none", "truncated": False, "attempts": [],
        }  # fmt: skip


def test_a_tree_of_many_cycles_and_orphans_places_every_span_once():
    rng = random.Random(11)
    rows = [
        SpanRow("r", "a", sid(i), i, TRACE, sid(rng.randrange(400)) if i % 7 else None, "s", "INTERNAL", T0, None,
                "UNSET", None, "{}", "[]", "[]", "{}", matched=rng.random() < 0.2)
        for i in range(300)
    ]  # fmt: skip
    seen: list[str] = []

    def collect(nodes: list[dict[str, Any]]) -> None:
        for n in nodes:
            seen.append(n["span_id"])
            collect(n["children"])

    tree = build_tree(rows, prune=False)
    for nodes in tree.values():
        collect(nodes)
    assert sorted(seen) == sorted(r.span_id for r in rows)
    seen.clear()
    for nodes in build_tree(rows, prune=True).values():
        collect(nodes)
    assert {r.span_id for r in rows if r.matched} <= set(seen) < {r.span_id for r in rows}


# -- hostile input --------------------------------------------------------------------------------------------------
async def test_hostile_parameters_are_refused_naming_the_parameter(api, kafka_bootstrap, kafka_topics, pg_url):  # noqa: F811
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        token = await post(api, [body("at-1", 1, 1), body("at-1", 2, 2)])
        first = (await api.get("/v1/rollouts/ro-a/spans", params={"after": token, "limit": 1})).json()
    good_cursor = first["next_cursor"]
    assert decode_cursor(good_cursor) == SpanKey("at-1", 1, T0 + timedelta(seconds=1), sid(1))
    forged = encode_cursor(SpanKey("at-9", 1, T0, sid(1)))
    refused = [
        ("/v1/rollouts/ro-a/spans?attr=x", "query.attr"),
        ("/v1/rollouts/ro-a/spans?attr.=x", "query.attr."),
        ("/v1/rollouts/ro-a/spans?attr." + "k" * 257 + "=x", "query.attr." + "k" * 257),
        ("/v1/rollouts/ro-a/spans?attr.k=" + "v" * 4097, "query.attr.k"),
        ("/v1/rollouts/ro-a/spans?" + "&".join(f"attr.k{i}=1" for i in range(17)), "query.attr.k16"),
        ("/v1/rollouts/ro-a/trace?attr.k%00=1", "query.attr.k\\u0000"),
        ("/v1/rollouts/ro-a/spans?attr.k=%00", "query.attr.k"),
        ("/v1/rollouts/ro-a/spans?name=a%00b", "query.name"),
        ("/v1/rollouts/ro-a/spans?name=" + "n" * 1001, "query.name.0"),
        ("/v1/rollouts/ro-a/spans?name_prefix=" + "n" * 1001, "query.name_prefix"),
        ("/v1/rollouts/ro-a/spans?attempt_id=at/1", "query.attempt_id"),
        ("/v1/rollouts/ro-a/trace?attempt_id=" + "a" * 201, "query.attempt_id"),
        ("/v1/rollouts/ro-a/spans?limit=0", "query.limit"),
        ("/v1/rollouts/ro-a/spans?limit=1001", "query.limit"),
        ("/v1/rollouts/ro-a/trace?max_spans=50001", "query.max_spans"),
        ("/v1/rollouts/ro-a/spans?cursor=garbage", "query.cursor"),
        ("/v1/rollouts/ro-a/spans?cursor=" + "A" * 1001, "query.cursor"),
        (f"/v1/rollouts/ro-a/spans?cursor={forged}", "query.cursor"),  # names an attempt this read lacks
        (f"/v1/rollouts/ro-other/spans?cursor={good_cursor}", "query.cursor"),  # another rollout's cursor
        (f"/v1/rollouts/ro-a/spans?attempt_id=at-2&cursor={good_cursor}", "query.cursor"),
        ("/v1/rollouts/ro%00a/spans", "path"),
        ("/v1/rollouts/" + "r" * 201 + "/trace", "path.rollout_id"),
        ("/v1/rollouts/ro-a/spans?after=x%00", "query.after"),
    ]
    for url, loc in refused:
        answer = await api.get(url)
        assert answer.status_code == 422, (url, answer.text)
        assert loc in [".".join(map(str, e["loc"])) for e in answer.json()["detail"]], (url, answer.text)
    assert (await api.get("/v1/rollouts/ro-a/spans?after=not-a-token")).status_code == 400
    # JSON that jsonb refuses, or numbers it cannot hold, are only strings to match, never a 500.
    for value in ('"a\\u0000"', "1e999", "NaN", "[1,2]", '{"a":1}', "9" * 400):
        answer = await api.get("/v1/rollouts/ro-a/spans", params={"attr.n": value})
        assert answer.status_code == 200 and answer.json()["items"] == [], (value, answer.text)
    assert attribute_values("1") == ('"1"', "1") and attribute_values('"a\\u0000"') == ('"\\"a\\\\u0000\\""',)
    page = (await api.get("/v1/rollouts/ro-a/spans", params={"cursor": good_cursor})).json()
    assert [s["span_id"] for s in page["items"]] == [sid(2)] and page["next_cursor"] is None
