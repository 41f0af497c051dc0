"""What the triplet projection's tests build on: spans as agents and the proxy write them, the in-process API,
a worker, and a feed that waits until the projection has applied what it published."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from agl.app import create_app
from agl.config import Settings
from consumers.worker import ProjectionWorker
from projections.base import Projection
from projections.triplets import PROJECTION
from schemas import Event, RewardAssigned, RolloutEnqueued, RolloutMode, SpanRecorded
from schemas.spans import SpanKind
from tests.consumers.helpers import publish, wait_for_total

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TRACE = "ab" * 16


def span_id(n: int) -> str:
    return f"{n:016x}"


def llm_call(
    rollout: str, attempt: str, seq: int, sid: int, *, t: float, prompt: list[int], response: list[int],
    parent: int | None = None, response_id: str | None = None, question: str = "2+2?", answer: str = "4",
) -> SpanRecorded:  # fmt: skip
    """An LLM call span as examples/math_agent.py and the proxy write it (design note conventions)."""
    return plain_span(
        rollout,
        attempt,
        seq,
        sid,
        "openai.chat.completion",
        t=t,
        end=t + 1,
        parent=parent,
        kind="CLIENT",
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
               parent: int | None = None, attributes: dict[str, Any] | None = None,
               kind: SpanKind = "INTERNAL") -> SpanRecorded:  # fmt: skip
    return SpanRecorded(
        rollout_id=rollout,
        attempt_id=attempt,
        sequence_id=seq,
        trace_id=TRACE,
        span_id=span_id(sid),
        parent_id=None if parent is None else span_id(parent),
        name=name,
        kind=kind,
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


@pytest.fixture(name="api")
async def api_fixture(kafka_bootstrap, kafka_topics, pg_url):
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
