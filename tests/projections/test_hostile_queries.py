"""Hostile query and path parameters at the read routes: 4xx naming the parameter, never a 500 or a long wait.

Before, a NUL in a filter or a path id reached PostgreSQL (500), an ``offset`` beyond bigint was a 500, and a
``?after=`` token naming a partition that does not exist held a pooled connection for the whole wait.
"""

from __future__ import annotations

import time

import pytest

from schemas.topics import ROLLOUTS
from tests.consumers.helpers import lifecycle, running, wait_for_total
from tests.projections.test_routes import api, publish_with_token, worker  # noqa: F401 - `api` is a fixture

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


async def test_hostile_parameters_are_refused_and_the_read_routes_stay_up(api, kafka_bootstrap, kafka_topics, pg_url):  # noqa: F811
    async with running(worker(kafka_bootstrap, pg_url, kafka_topics)):
        token = await publish_with_token(kafka_bootstrap, kafka_topics, lifecycle(1))
        await wait_for_total(pg_url, "rollouts_g1", 4)
        topic = ROLLOUTS.full_name(kafka_topics)
        refused = [
            ("/v1/rollouts?status=run%00ning", 422, "query.status"),
            ("/v1/rollouts?status=sleeping", 422, "query.status.0"),
            ("/v1/rollouts?mode=tr%00ain", 422, "query.mode"),
            ("/v1/rollouts?mode=sing", 422, "query.mode"),
            ("/v1/rollouts?rollout_id=ro-1&rollout_id=ro%00x", 422, "query.rollout_id"),
            ("/v1/rollouts?rollout_id=ro/x", 422, "query.rollout_id.0"),
            ("/v1/rollouts?rollout_id=" + "r" * 201, 422, "query.rollout_id.0"),
            ("/v1/rollouts?offset=9223372036854775808", 422, "query.offset"),
            ("/v1/rollouts/ro-00001/events?offset=9223372036854775808", 422, "query.offset"),
            ("/v1/resources?offset=9223372036854775808", 422, "query.offset"),  # these three were 500s
            ("/v1/resources/rs-1?version=2147483648", 422, "query.version"),
            ("/v1/workers?offset=9223372036854775808", 422, "query.offset"),
            ("/v1/rollouts?after=" + "t" * 10_001, 422, "query.after"),
            ("/v1/rollouts/ro-00001?after=x%00", 422, "query.after"),
            ("/v1/rollouts/ro%00x", 422, "path"),
            ("/v1/rollouts/" + "r" * 201, 422, "path.rollout_id"),
            (f"/v1/rollouts?after={topic}:%C2%B2:1", 400, None),  # "²" is a digit to str.isdigit, not to int()
            (f"/v1/rollouts?after={topic}:0:99999999999999999999", 400, None),
            (f"/v1/rollouts?after={topic}:2147483648:0", 400, None),
        ]
        for url, status, loc in refused:
            answer = await api.get(url)
            assert answer.status_code == status, (url, answer.text)
            if loc is not None:
                assert loc in [".".join(map(str, e["loc"])) for e in answer.json()["detail"]], (url, answer.text)
        # A partition the broker does not have: refused at once, not after the whole wait.
        started = time.monotonic()
        missing = await api.get("/v1/rollouts", params={"after": f"{topic}:{ROLLOUTS.partitions}:0", "wait_ms": 20_000})
        assert missing.status_code == 400 and "do not exist" in missing.json()["detail"], missing.text
        assert time.monotonic() - started < 10
        # The stack answers as before.
        page = await api.get("/v1/rollouts", params={"after": token, "offset": 0})
        assert page.status_code == 200 and [r["rollout_id"] for r in page.json()["items"]] == ["ro-00001"]
        assert (await api.get("/v1/rollouts", params={"status": "succeeded"})).json()["total"] == 1
        assert (await api.get("/v1/rollouts/ro-00001")).status_code == 200
        assert (await api.get("/v1/projections")).status_code == 200
        assert (await api.get("/healthz")).status_code == 200
