"""The triplet projection on the real stack: spans and rewards on Kafka become triplets in PostgreSQL, served and
exported by the API and the CLI (its rebuilds: ``test_triplet_rebuilds.py``)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from datetime import UTC, timedelta
from typing import Any

import httpx
import orjson
import pyarrow.parquet as pq
import pytest

from projections.triplet_adapter import AdapterConfig
from projections.triplets import rollout_triplets
from schemas import Event, RewardAssigned
from tests.consumers.helpers import fetch_all, running
from tests.projections.triplets_support import (
    T0,
    Feed,
    api_fixture,  # noqa: F401 - the `api` fixture
    catalogue,
    enqueued,
    llm_call,
    rewards_of,
    span_id,
    triplets_of,
    two_calls,
    worker,
)
from tests.runner.conftest import app, client  # noqa: F401 - fixtures: the in-process API and the runner's SDK

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


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
