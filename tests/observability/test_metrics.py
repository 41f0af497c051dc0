"""``GET /metrics``: latency by route template, events published by type, projection lag, rollouts by status."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.rebuild import Rebuild
from projections.rollouts import PROJECTION as ROLLOUTS
from projections.tracking import begin_rebuild
from tests.consumers.helpers import running
from tests.projections.test_routes import worker
from tests.runner.conftest import until

pytestmark = [pytest.mark.pg, pytest.mark.kafka]


async def samples(api: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = await api.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(figures: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    """The sample of ``name`` whose labels include ``labels`` (None when there is none)."""
    found = [v for (n, ls), v in figures.items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, f"{name}{labels} is ambiguous: {found}"
    return found[0] if found else None


async def test_latency_is_labelled_by_route_template_not_raw_path(api):
    for rollout_id in ("ro-a", "ro-b", "ro-c"):
        assert (await api.get(f"/v1/rollouts/{rollout_id}", params={"wait_ms": 0})).status_code in (404, 503)
    assert (await api.get("/no/such/path/1")).status_code == 404
    figures = await samples(api)
    histogram = "agl_http_request_duration_seconds_count"
    routes = {dict(ls)["route"] for n, ls in figures if n == histogram}
    assert "/v1/rollouts/{rollout_id}" in routes and "unmatched" in routes
    assert not any("ro-a" in r or "/no/such" in r for r in routes)  # raw paths never become labels
    counted = sum(
        v for (n, ls), v in figures.items() if n == histogram and ("route", "/v1/rollouts/{rollout_id}") in ls
    )
    assert counted == 3
    assert value(figures, "agl_http_request_duration_seconds_bucket", route="unmatched", status="404", le="+Inf") == 1


async def test_published_events_rollouts_and_projection_lag(api, kafka_bootstrap, kafka_topics, pg_url):
    before = value(await samples(api), "agl_events_published_total", type="rollout.enqueued") or 0.0
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        answer = await api.post("/v1/rollouts", json=[{"input": n} for n in range(3)])
        assert answer.status_code == 202, answer.text
        token = answer.json()["position"]
        assert (await api.get("/v1/rollouts", params={"after": token})).json()["total"] == 3
        await asyncio.sleep(1.1)  # past the scrape cache
        figures = await samples(api)
    assert value(figures, "agl_events_published_total", type="rollout.enqueued") == before + 3
    assert value(figures, "agl_rollouts", status="queuing") == 3
    assert value(figures, "agl_projection_lag_events", projection="rollouts") == 0
    assert value(figures, "agl_projection_stalled", projection="rollouts") == 0
    assert value(figures, "agl_projection_dead_letters", projection="rollouts") == 0
    assert value(figures, "agl_projection_position", projection="rollouts") == 3

    # The projection is stopped: new rollouts are lag, in events and in seconds, until it runs again.
    assert (await api.post("/v1/rollouts", json=[{"input": n} for n in range(2)])).status_code == 202

    async def lagging() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        figures = await samples(api)
        return figures if value(figures, "agl_projection_lag_events", projection="rollouts") == 2 else None

    figures = await until(lagging, timeout_s=10, every_s=0.3)
    assert (value(figures, "agl_projection_lag_seconds", projection="rollouts") or 0) > 0
    assert value(figures, "agl_rollouts", status="queuing") == 3  # the read model has not moved


async def test_a_probe_storm_costs_one_round_of_checks(api, app):
    app.state.readiness.ttl_s = 600  # about sharing, not about how fast 20 requests run on a busy machine
    answers = await asyncio.gather(*(api.get("/readyz") for _ in range(20)))
    assert {a.status_code for a in answers} <= {200, 503}
    assert len({a.text for a in answers}) == 1 and app.state.readiness.checked == 1
    assert answers[0].json()["checks"]["postgres"] == answers[0].json()["checks"]["kafka"] == "up"
    assert (await api.get("/healthz")).json() == {"status": "ok"}


async def test_rebuild_progress_is_reported_while_a_generation_builds(api, kafka_bootstrap, kafka_topics, pg_url):
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        answer = await api.post("/v1/rollouts", json=[{"input": n} for n in range(3)])
        assert (await api.get("/v1/rollouts", params={"after": answer.json()["position"]})).json()["total"] == 3
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        building, _ = await begin_rebuild(conn, ROLLOUTS)
    await asyncio.sleep(1.1)  # past the scrape cache
    figures = await samples(api)
    progress = "agl_projection_rebuild_progress_ratio"
    assert value(figures, progress, projection="rollouts", generation=str(building.generation)) == 0
    assert value(figures, "agl_projection_lag_events", projection="rollouts", state="active") == 0

    rebuild = Rebuild(ROLLOUTS, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    assert (await rebuild.run(asyncio.Event())).switched
    await asyncio.sleep(1.1)
    figures = await samples(api)
    assert value(figures, progress, projection="rollouts") is None  # nothing builds any more
    assert value(figures, "agl_projection_position", projection="rollouts", generation=str(building.generation)) == 3
