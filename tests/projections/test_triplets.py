"""The triplet projection on the real stack: spans and rewards on Kafka become triplets in PostgreSQL, served and
exported by the API and the CLI, rebuilt byte for byte, and rebuilt under another adapter configuration."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from asgi_lifespan import LifespanManager

from agl.app import create_app
from agl.config import Settings
from consumers.rebuild import Rebuild
from consumers.worker import ProjectionWorker
from projections import registry
from projections.base import Projection
from projections.triplet_adapter import AdapterConfig
from projections.triplets import PROJECTION, rollout_triplets, triplet_projection
from schemas import Event, RewardAssigned, RolloutEnqueued, RolloutMode, SpanRecorded
from tests.consumers.helpers import fetch_all, publish, running, wait_for_total
from tests.runner.conftest import app, client  # noqa: F401 - fixtures: the in-process API and the runner's SDK

pytestmark = [pytest.mark.kafka, pytest.mark.pg]

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TRACE = "ab" * 16


def span_id(n: int) -> str:
    return f"{n:016x}"


def llm_call(
    rollout: str, attempt: str, seq: int, sid: int, *, t: float, prompt: list[int], response: list[int],
    parent: int | None = None, response_id: str | None = None, question: str = "2+2?", answer: str = "4",
) -> SpanRecorded:  # fmt: skip
    """An LLM call span as examples/math_agent.py and the proxy write it (design note conventions)."""
    return SpanRecorded(
        rollout_id=rollout,
        attempt_id=attempt,
        sequence_id=seq,
        trace_id=TRACE,
        span_id=span_id(sid),
        parent_id=None if parent is None else span_id(parent),
        name="openai.chat.completion",
        kind="CLIENT",
        start_time=T0 + timedelta(seconds=t),
        end_time=T0 + timedelta(seconds=t + 1),
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "smollm2",
            "gen_ai.response.model": "smollm2",
            "gen_ai.response.id": response_id or f"resp-{rollout}-{attempt}-{sid}",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": question,
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": answer,
            "prompt_token_ids": prompt,
            "response_token_ids": response,
        },
    )


def plain_span(rollout: str, attempt: str, seq: int, sid: int, name: str, *, t: float, end: float,
               parent: int | None = None, attributes: dict[str, Any] | None = None) -> SpanRecorded:  # fmt: skip
    return SpanRecorded(
        rollout_id=rollout,
        attempt_id=attempt,
        sequence_id=seq,
        trace_id=TRACE,
        span_id=span_id(sid),
        parent_id=None if parent is None else span_id(parent),
        name=name,
        start_time=T0 + timedelta(seconds=t),
        end_time=T0 + timedelta(seconds=end),
        attributes=attributes or {},
    )


def reward_span(rollout: str, attempt: str, seq: int, sid: int, value: float, *, t: float, parent: int) -> SpanRecorded:
    """An Agent Lightning v0.3 reward annotation span."""
    return plain_span(
        rollout, attempt, seq, sid, "agentlightning.annotation", t=t, end=t, parent=parent,
        attributes={"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": value},
    )  # fmt: skip


def enqueued(rollout: str, *, mode: RolloutMode = "train", resources_id: str | None = "res-1") -> RolloutEnqueued:
    return RolloutEnqueued(rollout_id=rollout, input={"q": rollout}, mode=mode, resources_id=resources_id)


def two_calls(rollout: str, attempt: str = "at-1", *, t: float = 0.0) -> list[SpanRecorded]:
    """An agent span with two LLM calls, each with token ids."""
    return [
        plain_span(rollout, attempt, 0, 1, "agent.run", t=t, end=t + 10),
        llm_call(rollout, attempt, 1, 2, t=t + 1, prompt=[1, 2, 3], response=[4, 5], parent=1),
        llm_call(rollout, attempt, 2, 3, t=t + 3, prompt=[1, 2, 3, 4, 5, 6], response=[7], parent=1, answer="5"),
    ]


# -- pure: a rollout's triplets from its spans and rewards --------------------------------------------------------
def test_an_unlinked_reward_is_the_final_reward_and_one_without_attempt_goes_to_the_newest_attempt():
    spans = [*two_calls("ro-1", "at-1"), *two_calls("ro-1", "at-2", t=100)]
    for i, s in enumerate(spans):  # the rollout's sequence ids are one total order across its attempts
        spans[i] = s.model_copy(update={"sequence_id": i})
    rewards = [
        (10, RewardAssigned(rollout_id="ro-1", attempt_id="at-1", value=0.5)),
        (11, RewardAssigned(rollout_id="ro-1", value=1.0)),  # no attempt: the newest one with triplets
    ]
    by_attempt = dict(rollout_triplets(spans, rewards, AdapterConfig()))
    assert [(t.index, t.reward, t.reward_source) for t in by_attempt["at-1"]] == [(0, None, None), (1, 0.5, "final")]
    assert [(t.index, t.reward, t.reward_source) for t in by_attempt["at-2"]] == [(0, None, None), (1, 1.0, "final")]
    assert by_attempt["at-1"][0].prompt_token_ids == (1, 2, 3) and by_attempt["at-1"][1].response_token_ids == (7,)


# -- on the real stack -------------------------------------------------------------------------------------------
@pytest.fixture
async def api(kafka_bootstrap, kafka_topics, pg_url):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    application = create_app(settings)
    async with (
        LifespanManager(application),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://api") as http,
    ):
        yield http


def worker(kafka_bootstrap, pg_url, prefix, projection: Projection = PROJECTION) -> ProjectionWorker:
    return ProjectionWorker(
        projection, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False
    )


class Feed:
    """Publishes events and waits until the projection has applied everything published so far."""

    def __init__(self, bootstrap: str, prefix: str, pg_url: str, schema: str = "triplets_g1") -> None:
        self.bootstrap, self.prefix, self.pg_url, self.schema = bootstrap, prefix, pg_url, schema
        self.total = 0

    async def __call__(self, events: list[Event]) -> None:
        await publish(self.bootstrap, self.prefix, events)
        self.total += len(events)
        await wait_for_total(self.pg_url, self.schema, self.total)


async def triplets_of(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    answer = await api.get("/v1/triplets", params={"limit": 1000, **params})
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    assert page["next_cursor"] is None
    items: list[dict[str, Any]] = page["items"]
    return items


def rewards_of(rows: list[dict[str, Any]]) -> list[tuple[str, str, int, float | None, str | None]]:
    return [(r["rollout_id"], r["attempt_id"], r["index"], r["reward"], r["reward_source"]) for r in rows]


async def test_spans_and_rewards_become_triplets_and_late_facts_update_them(api, kafka_bootstrap, kafka_topics, pg_url):
    feed = Feed(kafka_bootstrap, kafka_topics, pg_url)
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        final = RewardAssigned(rollout_id="ro-1", attempt_id="at-1", value=0.25)
        await feed([enqueued("ro-1"), *two_calls("ro-1"), final])
        rows = await triplets_of(api)
        assert len(rows) == 2
        first, second = rows
        assert (first["prompt_token_ids"], first["response_token_ids"]) == ([1, 2, 3], [4, 5])
        assert (second["prompt_token_ids"], second["response_token_ids"]) == ([1, 2, 3, 4, 5, 6], [7])
        assert first["span_id"] == span_id(2) and first["response_id"] == "resp-ro-1-at-1-2"
        assert first["model"] == "smollm2" and (first["mode"], first["resources_id"]) == ("train", "res-1")
        assert first["start_time"] == "2026-01-01T00:00:01+00:00" and first["end_time"] == "2026-01-01T00:00:02+00:00"
        assert rewards_of(rows) == [("ro-1", "at-1", 0, None, None), ("ro-1", "at-1", 1, 0.25, "final")]

        # A late reward of the finished attempt, linked to the first call's response: only that call changes.
        linked = RewardAssigned(rollout_id="ro-1", attempt_id="at-1", value=0.75, response_id="resp-ro-1-at-1-2")
        await feed([linked])
        assert rewards_of(await triplets_of(api)) == [
            ("ro-1", "at-1", 0, 0.75, "link"), ("ro-1", "at-1", 1, 0.25, "final"),
        ]  # fmt: skip

        # A late third call becomes the last triplet, and the final reward moves onto it.
        late = llm_call("ro-1", "at-1", 3, 4, t=6, prompt=[9], response=[10, 11], parent=1)
        await feed([late])
        rows = await triplets_of(api)
        assert rewards_of(rows) == [
            ("ro-1", "at-1", 0, 0.75, "link"), ("ro-1", "at-1", 1, None, None), ("ro-1", "at-1", 2, 0.25, "final"),
        ]  # fmt: skip
        assert rows[2]["response_token_ids"] == [10, 11]

        # Copies change nothing: the same span again (first wins), the same reward event again (by event id).
        changed = late.model_copy(update={"attributes": {**late.attributes, "response_token_ids": [99]}})
        before = await fetch_all(pg_url, "SELECT * FROM triplets_g1.triplets ORDER BY idx")
        await feed([changed, final, linked])
        assert await fetch_all(pg_url, "SELECT * FROM triplets_g1.triplets ORDER BY idx") == before
        stored = await fetch_all(pg_url, "SELECT count(*) FROM triplets_g1.triplet_spans")
        assert stored == [(4,)]
        assert await fetch_all(pg_url, "SELECT count(*) FROM triplets_g1.triplet_rewards") == [(2,)]

        # A second attempt, then a late reward of the first: each attempt keeps its own rewards.
        attempt_2 = [s.model_copy(update={"sequence_id": s.sequence_id + 10}) for s in two_calls("ro-1", "at-2", t=100)]
        await feed([*attempt_2, RewardAssigned(rollout_id="ro-1", attempt_id="at-2", value=1.0)])
        await feed([RewardAssigned(rollout_id="ro-1", attempt_id="at-1", value=0.5)])
        assert rewards_of(await triplets_of(api)) == [
            ("ro-1", "at-1", 0, 0.75, "link"), ("ro-1", "at-1", 1, None, None), ("ro-1", "at-1", 2, 0.5, "final"),
            ("ro-1", "at-2", 0, None, None), ("ro-1", "at-2", 1, 1.0, "final"),
        ]  # fmt: skip


def without_rollout(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with what differs between two rollouts built alike (their ids, and the response ids) taken out."""
    return [{k: v for k, v in r.items() if k not in ("rollout_id", "response_id", "response_meta")} for r in rows]


async def test_the_order_between_topics_does_not_matter(api, kafka_bootstrap, kafka_topics, pg_url):
    feed = Feed(kafka_bootstrap, kafka_topics, pg_url)

    def facts(rollout: str) -> tuple[list[Event], list[Event], list[Event]]:
        rewards: list[Event] = [
            RewardAssigned(rollout_id=rollout, attempt_id="at-1", value=1.0, span_id=span_id(2)),
            RewardAssigned(rollout_id=rollout, attempt_id="at-1", value=0.5),
        ]
        return [enqueued(rollout, mode="val", resources_id="res-2")], [*two_calls(rollout)], rewards

    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        enqueue, spans, rewards = facts("ro-a")  # the usual order, in one batch
        await feed([*enqueue, *spans, *rewards])
        enqueue, spans, rewards = facts("ro-b")  # rewards first, then spans, the enqueue last: three batches
        await feed(rewards)
        assert await triplets_of(api, rollout_id="ro-b") == []
        await feed(spans)
        assert [r["mode"] for r in await triplets_of(api, rollout_id="ro-b")] == [None, None]
        await feed(enqueue)
        a, b = await triplets_of(api, rollout_id="ro-a"), await triplets_of(api, rollout_id="ro-b")
    assert rewards_of(a) == [("ro-a", "at-1", 0, 1.0, "link"), ("ro-a", "at-1", 1, 0.5, "final")]
    assert without_rollout(a) == without_rollout(b)
    assert b[0]["mode"] == "val" and b[0]["resources_id"] == "res-2"


def catalogue() -> list[Event]:
    """Five rollouts of two calls each, ten seconds apart; rewards 0.0, 0.25, ... on the last call, none on ro-4."""
    events: list[Event] = []
    for i in range(5):
        rollout = f"ro-{i}"
        events.append(enqueued(rollout, mode="train" if i % 2 == 0 else "test", resources_id=f"res-{i % 2}"))
        events.extend(two_calls(rollout, t=10.0 * i))
        if i != 4:
            events.append(RewardAssigned(rollout_id=rollout, attempt_id="at-1", value=i / 4))
    return events


async def test_filters_and_cursor_pages(api, kafka_bootstrap, kafka_topics, pg_url):
    feed = Feed(kafka_bootstrap, kafka_topics, pg_url)
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        await feed(catalogue())
    everything = await triplets_of(api)
    order = [(r["rollout_id"], r["index"]) for r in everything]
    assert order == [(f"ro-{i}", n) for i in range(5) for n in (0, 1)]  # by the call's start time

    # Pages of three cover every triplet once, in order, and the last page says so.
    seen: list[tuple[str, int]] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/triplets", params=params)).json()
        seen.extend((r["rollout_id"], r["index"]) for r in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == order

    async def keys(**params: Any) -> list[tuple[str, int]]:
        return [(r["rollout_id"], r["index"]) for r in await triplets_of(api, **params)]

    assert await keys(rollout_id="ro-2") == [("ro-2", 0), ("ro-2", 1)]
    assert await keys(rollout_id="ro-2", attempt_id="at-9") == []
    assert await keys(mode="test") == [("ro-1", 0), ("ro-1", 1), ("ro-3", 0), ("ro-3", 1)]
    assert await keys(resources_id="res-0", has_reward="true") == [("ro-0", 1), ("ro-2", 1)]
    assert await keys(reward_min=0.25, reward_max=0.5) == [("ro-1", 1), ("ro-2", 1)]
    assert len(await keys(has_reward="false")) == 6
    since, until = (T0 + timedelta(seconds=13)).isoformat(), (T0 + timedelta(seconds=31)).isoformat()
    # Calls start at 10*i + 1 and 10*i + 3 seconds: since is inclusive (ro-1's call at 13), until exclusive (31).
    assert await keys(since=since, until=until) == [("ro-1", 1), ("ro-2", 0), ("ro-2", 1)]
    assert (await api.get("/v1/rollouts/ro-3/triplets")).json()["items"] == [
        r for r in everything if r["rollout_id"] == "ro-3"
    ]
    assert (await api.get("/v1/rollouts/ro-none/triplets")).json() == {"items": [], "next_cursor": None}

    # Bad input is a 4xx with a reason, never a 500.
    assert (await api.get("/v1/triplets", params={"cursor": "not-a-cursor"})).status_code == 400
    forged = base64.urlsafe_b64encode(orjson.dumps([T0.isoformat(), "ro\u0000", "at-1", 0])).decode()
    assert (await api.get("/v1/triplets", params={"cursor": forged})).status_code == 400  # PostgreSQL refuses NUL
    assert (await api.get("/v1/triplets", params={"since": "2026-01-01T00:00:00"})).status_code == 422  # no zone
    assert (await api.get("/v1/triplets", params={"reward_min": "nan"})).status_code == 422
    assert (await api.get("/v1/triplets", params={"rollout_id": "x" * 10_000})).status_code == 422
    assert (await api.get("/v1/triplets", params={"projection": "rollouts"})).status_code == 400
    assert (await api.get("/v1/triplets/export", params={"format": "csv"})).status_code == 422


async def test_jsonl_and_parquet_exports_read_back_equal_to_the_api_rows(
    api, kafka_bootstrap, kafka_topics, pg_url, *, tmp_path, monkeypatch
):
    feed = Feed(kafka_bootstrap, kafka_topics, pg_url)
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        await feed(catalogue())
    rows = await triplets_of(api)
    train = [r for r in rows if r["mode"] == "train"]

    answer = await api.get("/v1/triplets/export", params={"format": "jsonl"})
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    assert [orjson.loads(line) for line in answer.content.splitlines()] == rows

    answer = await api.get("/v1/triplets/export", params={"format": "parquet", "mode": "train"})
    assert parquet_rows(answer.content) == train

    # The CLI, as a user runs it: settings from the environment, a file written whole.
    from agl.cli import main

    monkeypatch.setenv("AGL_DATABASE_URL", pg_url)
    monkeypatch.setenv("AGL_DATA_DIR", str(tmp_path / "agl"))
    out = tmp_path / "train.parquet"
    argv = ["triplets", "export", "--format", "parquet", "--where", "mode=train", "--output", str(out)]
    assert await asyncio.to_thread(main, argv) == 0
    assert parquet_rows(out.read_bytes()) == train and not (tmp_path / "train.parquet.partial").exists()
    out = tmp_path / "all.jsonl"
    assert await asyncio.to_thread(main, ["triplets", "export", "--output", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    assert await asyncio.to_thread(main, ["triplets", "export", "--where", "colour=red"]) == 2
    assert await asyncio.to_thread(main, ["triplets", "export", "--where", "reward_min=high"]) == 2


def parquet_rows(data: bytes) -> list[dict[str, Any]]:
    """A Parquet export's rows in the API's shape: JSON columns parsed, times as ISO text, maps as dicts."""
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    for row in rows:
        for name in ("logprobs", "prompt", "response", "request", "response_meta"):
            row[name] = None if row[name] is None else orjson.loads(row[name])
        for name in ("start_time", "end_time"):
            row[name] = None if row[name] is None else row[name].astimezone(UTC).isoformat()
        row["reward_dimensions"] = dict(row["reward_dimensions"])
    return rows


def sibling_case(rollout: str = "ro-s", attempt: str = "at-1") -> list[Event]:
    """Two reward annotation spans under the agent; the second call sits inside a step, not beside the reward.

    ``first_occurrence`` gives each reward to the latest call that ended before it without one: the second call
    gets 0.5, the third 1.0. ``first_sibling`` looks only among the reward's earlier siblings: the third call is
    inside a step, so the 1.0 finds no call.
    """
    return [
        plain_span(rollout, attempt, 0, 1, "agent.run", t=0, end=20),
        plain_span(rollout, attempt, 1, 5, "step", t=0.5, end=5, parent=1),
        llm_call(rollout, attempt, 2, 2, t=1, prompt=[1], response=[2], parent=5),
        llm_call(rollout, attempt, 3, 3, t=6, prompt=[3], response=[4], parent=1),
        reward_span(rollout, attempt, 4, 4, 0.5, t=8, parent=1),
        plain_span(rollout, attempt, 5, 6, "step", t=9, end=15, parent=1),
        llm_call(rollout, attempt, 6, 7, t=10, prompt=[5], response=[6], parent=6),
        reward_span(rollout, attempt, 7, 8, 1.0, t=16, parent=1),
    ]


FIRST_OCCURRENCE = [("ro-s", "at-1", 0, None, None), ("ro-s", "at-1", 1, 0.5, "positional"),
                    ("ro-s", "at-1", 2, 1.0, "positional")]  # fmt: skip
FIRST_SIBLING = [("ro-s", "at-1", 0, None, None), ("ro-s", "at-1", 1, 0.5, "positional"),
                 ("ro-s", "at-1", 2, None, None)]  # fmt: skip


async def table_rows(pg_url: str, schema: str, table: str) -> list[tuple[Any, ...]]:
    return await fetch_all(pg_url, f"SELECT t::text FROM {schema}.{table} t ORDER BY 1")  # noqa: S608 - our names


async def test_a_rebuild_gives_byte_identical_tables(kafka_bootstrap, kafka_topics, pg_url):
    feed = Feed(kafka_bootstrap, kafka_topics, pg_url)
    history: list[Event] = [*catalogue(), *sibling_case()]
    history.append(RewardAssigned(rollout_id="ro-0", value=0.9))  # no attempt: the newest one with triplets
    history.extend(two_calls("ro-0", "at-2", t=200))  # a second attempt of ro-0, after that reward
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):  # live: as fast as it comes
        await feed(history[:17])
        await feed(history[17:])
    live = {t: await table_rows(pg_url, "triplets_g1", t) for t in PROJECTION.tables}
    assert len(live["triplets"]) == 10 + 3 + 2 and len(live["triplet_config"]) == 1
    ro_0 = await fetch_all(
        pg_url, "SELECT attempt_id, idx, reward, reward_source FROM triplets_g1.triplets "
        "WHERE rollout_id = 'ro-0' ORDER BY attempt_id, idx",
    )  # fmt: skip
    assert ro_0 == [
        ("at-1", 0, None, None),
        ("at-1", 1, 0.0, "final"),
        ("at-2", 0, None, None),
        ("at-2", 1, 0.9, "final"),
    ]

    # Rebuilt from offset 0 in batches of 3 records: other batch boundaries, the same rows.
    rebuild = Rebuild(
        PROJECTION, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, batch_size=3,
        drop_old=False, readers_drain_s=1,
    )  # fmt: skip
    result = await rebuild.run(asyncio.Event())
    assert result.switched and result.generation.schema == "triplets_g2"
    # The engine compared every table's checksum with the live generation's (a difference refuses the switch).
    assert set(result.checksums) == set(PROJECTION.tables)
    assert all(new == old for new, old in result.checksums.values())
    assert {t: await table_rows(pg_url, "triplets_g2", t) for t in PROJECTION.tables} == live


async def test_another_adapter_configuration_is_another_projection(
    api, kafka_bootstrap, kafka_topics, pg_url, monkeypatch
):
    sibling = triplet_projection("triplets_sibling", AdapterConfig(reward_match="first_sibling"))
    monkeypatch.setitem(registry._registered, sibling.name, sibling)
    events = [enqueued("ro-s"), *sibling_case()]
    await publish(kafka_bootstrap, kafka_topics, events)
    async with (
        running(worker(kafka_bootstrap, pg_url, kafka_topics)),
        running(worker(kafka_bootstrap, pg_url, kafka_topics, sibling)),
    ):
        await wait_for_total(pg_url, "triplets_g1", len(events))
        await wait_for_total(pg_url, "triplets_sibling_g1", len(events))
    assert rewards_of(await triplets_of(api)) == FIRST_OCCURRENCE
    assert rewards_of(await triplets_of(api, projection="triplets_sibling")) == FIRST_SIBLING
    config = await fetch_all(
        pg_url, "SELECT projection, config->>'reward_match' FROM triplets_sibling_g1.triplet_config"
    )
    assert config == [("triplets_sibling", "first_sibling")]

    # Or the same name at a new version, built by a rebuild: readers switch to the other assignment.
    version_2 = triplet_projection("triplets", AdapterConfig(reward_match="first_sibling"), version=2)
    rebuild = Rebuild(version_2, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics,
                      readers_drain_s=1)  # fmt: skip
    assert (await rebuild.run(asyncio.Event())).switched
    assert rewards_of(await triplets_of(api)) == FIRST_SIBLING

    # Trace to messages: one OpenAI chat payload per LLM call, from the stored spans.
    messages = (await api.get("/v1/rollouts/ro-s/messages")).json()
    assert [m["span_id"] for m in messages["items"]] == [span_id(2), span_id(3), span_id(7)]
    assert messages["items"][0]["attempt_id"] == "at-1"
    assert messages["items"][0]["messages"] == [
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
    ]  # fmt: skip
    assert (await api.get("/v1/rollouts/ro-none/messages")).status_code == 404


async def test_the_math_agent_on_the_real_llm_ends_with_triplets_carrying_token_ids_and_rewards(
    app,  # noqa: F811 - the fixture imported above
    client,  # noqa: F811
    llm_endpoint,
    llm_model,
    *,
    kafka_bootstrap,
    kafka_topics,
    pg_url,
):
    from agl.dev_loop import dev_async
    from examples.math_agent import load_tasks, math_agent
    from schemas import LLMResource

    published = await client.publish_resources({"llm": LLMResource(endpoint=llm_endpoint, model=llm_model)})
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        rollouts = await dev_async(math_agent, load_tasks()[:2], client=client, resources_id=published.resources_id)
        assert [r.status for r in rollouts] == ["succeeded"] * 2, [r.error for r in rollouts]
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
        async with http:
            for rollout in rollouts:
                rows: list[dict[str, Any]] = []
                for _ in range(300):  # the agent's spans and reward reach the projection shortly after its end
                    rows = await triplets_of(http, rollout_id=rollout.rollout_id)
                    if rows and rows[0]["reward"] is not None:
                        break
                    await asyncio.sleep(0.1)
                (row,) = rows
                assert row["prompt_token_ids"] and row["response_token_ids"]
                assert row["reward"] == rollout.reward and row["reward_source"] == "link"
                assert row["attempt_id"] == rollout.detail["attempts"][0]["attempt_id"]
                assert row["resources_id"] == published.resources_id and row["model"]
            answer = await http.get("/v1/triplets/export", params={"format": "parquet"})
    exported = parquet_rows(answer.content)
    assert sorted(r["rollout_id"] for r in exported) == sorted(r.rollout_id for r in rollouts)
    assert all(r["prompt_token_ids"] and r["reward"] in (0.0, 1.0) for r in exported)


async def test_values_postgresql_cannot_hold_do_not_stop_the_projection(api, kafka_bootstrap, kafka_topics, pg_url):
    feed = Feed(kafka_bootstrap, kafka_topics, pg_url)
    hostile = llm_call("ro-h", "at-\t1", 0, 1, t=0, prompt=[1, 2**31], response=[3], question="nul\x00here")
    hostile = hostile.model_copy(
        update={"attributes": {**hostile.attributes, "gen_ai.request.max_tokens": 10**30}}
    )  # a NUL (text and jsonb refuse it), a token id beyond int4, an integer beyond 64 bits, a tab in an id
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        await feed([hostile, RewardAssigned(rollout_id="ro-h", attempt_id="at-\t1", value=1.0)])
        (row,) = await triplets_of(api, rollout_id="ro-h")
    assert row["attempt_id"] == "at-\t1" and row["reward"] == 1.0
    assert row["prompt"] == [{"role": "user", "content": "nul\ufffdhere"}]
    assert row["prompt_token_ids"] == [] and row["response_token_ids"] == [3]  # an invalid value falls through
    assert row["request"]["max_tokens"] == str(10**30)
