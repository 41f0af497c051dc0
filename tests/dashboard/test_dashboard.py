"""The dashboard in a real headless Chromium, against the API on a real port with real Kafka and PostgreSQL: the page
loads, shows a rollout published during the test, updates without a reload (a runner claims it, its spans and
reward arrive), drills down into its attempts, trace tree and triplets, charts the reward, and leaves a screenshot
(``.agl/artifacts/dashboard.png``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from playwright.async_api import Page, async_playwright

from agl.app import create_app
from consumers.worker import ProjectionWorker
from producers.client import AsyncClient, RetryPolicy
from projections.spans import PROJECTION as SPANS
from projections.triplets import PROJECTION as TRIPLETS
from schemas import RewardAssigned, SpanRecorded
from tests.auth.conftest import new_key
from tests.consumers.helpers import publish, running
from tests.dashboard.conftest import CHROMIUM_FLAGS
from tests.producers.conftest import api_settings
from tests.producers.test_llm_proxy import serving
from tests.projections.triplets_support import two_calls
from tests.runner.conftest import projected

pytestmark = [pytest.mark.pg, pytest.mark.kafka, pytest.mark.slow]

ARTIFACT = Path(__file__).resolve().parents[2] / ".agl" / "artifacts" / "dashboard.png"
WAIT_MS = 30_000


@contextlib.asynccontextmanager
async def api_on_a_port(kafka_bootstrap: str, pg_url: str, prefix: str) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The API served on a free port behind API keys, with the rollouts, workers, spans and triplet read models
    projected; its URL and a key per scope the test uses (the page gets a read-only one)."""
    app = create_app(api_settings(kafka_bootstrap, pg_url, prefix, auth="keys"))
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(LifespanManager(app, startup_timeout=60, shutdown_timeout=60))
        await stack.enter_async_context(projected(kafka_bootstrap, pg_url, prefix))
        for projection in (SPANS, TRIPLETS):
            worker = ProjectionWorker(
                projection, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False
            )
            await stack.enter_async_context(running(worker))
        url = await stack.enter_async_context(serving(app))
        keys = {scope: (await new_key(pg_url, prefix, [scope])).key for scope in ("read", "publish", "run")}
        yield url, keys


async def enqueue(http: httpx.AsyncClient, rollout_id: str) -> None:
    answer = await http.post("/v1/rollouts", json={"rollout_id": rollout_id, "input": {"q": rollout_id}})
    assert answer.status_code == 202, answer.text


def spans_of(rollout_id: str, attempt_id: str) -> list[SpanRecorded]:
    """An agent span with two LLM calls (token ids included), timed now so the reward lands in the chart."""
    shift = datetime.now(UTC) - timedelta(seconds=10) - datetime(2026, 1, 1, tzinfo=UTC)
    return [
        s.model_copy(update={"start_time": s.start_time + shift, "end_time": s.end_time and s.end_time + shift})
        for s in two_calls(rollout_id, attempt_id)
    ]


async def shown(page: Page, selector: str, text: str) -> None:
    await page.locator(selector).filter(has_text=text).first.wait_for(timeout=WAIT_MS)


async def test_the_dashboard_shows_rollouts_live(chromium, kafka_bootstrap, kafka_topics, pg_url):
    async with (
        api_on_a_port(kafka_bootstrap, pg_url, kafka_topics) as (url, keys),
        httpx.AsyncClient(base_url=url, timeout=60, headers={"x-api-key": keys["publish"]}) as http,
        AsyncClient(url, retry=RetryPolicy(attempts=1), api_key=keys["run"]) as runner,
        async_playwright() as pw,
    ):
        await enqueue(http, "ro-dash-before")
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # Without a key the page loads (it holds no data) and asks for one.
            answer = await page.goto(f"{url}/dashboard?poll_ms=500")
            assert answer is not None and answer.status == 200
            await page.locator("#key-form").wait_for(timeout=WAIT_MS)
            # With the key in the fragment (what `agl dashboard` prints): never sent in a URL, dropped from the bar.
            answer = await page.goto(f"{url}/dashboard?poll_ms=300#key={keys['read']}")
            assert answer is not None and answer.status == 200
            assert "key=" not in page.url
            await shown(page, "#rollouts tbody tr", "ro-dash-before")
            await page.evaluate("window.loadedOnce = true")  # a reload would lose it

            # While the page is open: a new rollout, a runner claiming it, its spans and its reward.
            await enqueue(http, "ro-dash-live")
            await shown(page, "#rollouts tbody tr", "ro-dash-live")
            await shown(page, '#status-counts [data-status="queuing"]', "queuing 2")
            await runner.register_worker("runner-dash", slots=2)
            (claim,) = await runner.dequeue("runner-dash")
            await runner.report_running(claim.rollout_id, claim.attempt_id, "runner-dash")
            await runner.heartbeat_worker("runner-dash", {"busy_slots": 1, "attempts": [claim.attempt_id]})
            events = [*spans_of(claim.rollout_id, claim.attempt_id)]
            await publish(kafka_bootstrap, kafka_topics, [*events, RewardAssigned(
                rollout_id=claim.rollout_id, attempt_id=claim.attempt_id, value=0.75)])  # fmt: skip

            await shown(page, "#workers tbody tr", "runner-dash")
            await shown(page, "#workers tbody tr", "busy")
            await shown(page, "#slots", "busy 1 · idle 1")
            await shown(page, '#status-counts [data-status="running"]', "running 1")
            await shown(page, "#projections tbody tr", "triplets")
            await page.locator("#rewards circle").first.wait_for(timeout=WAIT_MS)

            await page.locator("#rollouts tbody tr").filter(has_text=claim.rollout_id).click()  # drill down
            await shown(page, "#detail-id", claim.rollout_id)
            await shown(page, "#detail table tr", claim.attempt_id)
            await shown(page, "#detail ul.tree li", "agent.run")
            assert await page.locator("#detail ul.tree ul.tree li").count() == 2  # two LLM calls under the agent
            await shown(page, "#detail", "reward 0.75")
            assert await page.evaluate("window.loadedOnce") is True
            assert not errors, errors

            ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACT), full_page=True)
        finally:
            await browser.close()
    assert ARTIFACT.stat().st_size > 10_000
    print(f"dashboard screenshot: {ARTIFACT}")
