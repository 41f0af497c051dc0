"""The triplet projection rebuilt: byte-identical tables from a replay in other batches, and another adapter
configuration as another projection (side by side, or as a new version that readers switch to)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consumers.rebuild import Rebuild
from projections import registry
from projections.triplet_adapter import AdapterConfig
from projections.triplets import PROJECTION, triplet_projection
from schemas import Event, RewardAssigned
from tests.consumers.helpers import fetch_all, publish, running, wait_for_total
from tests.projections.triplets_support import (
    Feed,
    api_fixture,  # noqa: F401 - the `api` fixture
    catalogue,
    enqueued,
    llm_call,
    plain_span,
    reward_span,
    rewards_of,
    span_id,
    triplets_of,
    two_calls,
    worker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


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
