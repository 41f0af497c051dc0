"""The v0.3 routes answer as the real v0.3.0 server did (tests/compat/al-v030-golden.json, recorded from it): the
same status codes and the same fields, replayed in the recorded order with our ids in place of theirs.

Where we differ on purpose, the test says so: a missing rollout is 200 ``null`` (theirs: 500), an update of a
missing rollout is 404 (theirs: 500), statistics carry no in-memory byte counters.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.compat.conftest import golden
from tests.e2e.conftest import LiveServices

pytestmark = [pytest.mark.kafka, pytest.mark.pg, pytest.mark.slow]
RECORDED = golden()


def _keys(value: Any) -> Any:
    """The shape of a JSON value: its keys, recursively (a list by its first element)."""
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items() if k not in ("input", "attributes", "heartbeat_stats")}
    if isinstance(value, list):
        return [_keys(value[0])] if value else []
    return None


async def _call(http: httpx.AsyncClient, name: str, ids: dict[str, str]) -> httpx.Response:
    req = RECORDED[name]["req"]
    text = json.dumps(req)
    for theirs, ours in ids.items():
        text = text.replace(theirs, ours)
    req = json.loads(text)
    return await http.request(req["method"], req["path"], json=req.get("json"), params=req.get("params"))


async def _replay(http: httpx.AsyncClient, name: str, ids: dict[str, str]) -> Any:
    answer = await _call(http, name, ids)
    recorded = RECORDED[name]
    assert answer.status_code == recorded["status"], (name, answer.text)
    body = answer.json()
    assert _keys(body) == _keys(recorded["body"]), name
    return body


async def _eventually(
    http: httpx.AsyncClient, name: str, ids: dict[str, str], until: Callable[[Any], bool], timeout: float = 30
) -> Any:
    """Replay a read of a read model until ``until`` holds (a read model follows the log)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            body = await _replay(http, name, ids)
            assert until(body), body
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            return body


async def test_the_recorded_session_replays_with_the_same_codes_and_fields(agl_live: LiveServices) -> None:
    async with httpx.AsyncClient(base_url=agl_live.api_url, timeout=30) as http:
        ids: dict[str, str] = {}
        assert await _replay(http, "health", ids) == {"status": "ok"}
        assert await _replay(http, "resources_latest_missing", ids) is None
        added = await _replay(http, "add_resources", ids)
        ids["rs-56d613fa4d52"] = added["resources_id"]
        assert added["version"] == 1
        assert added["resources"]["main_llm"]["api_key"] is None
        assert added["resources"]["main_llm"]["sampling_parameters"] == {}

        (queued,) = await _replay(http, "enqueue", ids)
        ids["ro-6e800b2dbc59"] = queued["rollout_id"]
        assert queued["status"] == "queuing"
        assert queued["resources_id"] == added["resources_id"], "the latest resources are filled in"
        assert queued["config"]["retry_condition"] == ["failed"]

        (claimed,) = await _replay(http, "dequeue", ids)
        ids["at-d6135fe3"] = claimed["attempt"]["attempt_id"]
        assert claimed["rollout_id"] == queued["rollout_id"]
        assert (claimed["status"], claimed["attempt"]["status"]) == ("preparing", "preparing")
        assert (claimed["attempt"]["sequence_id"], claimed["attempt"]["worker_id"]) == (1, "Worker-0")
        assert await _replay(http, "dequeue_empty", ids) == []

        assert await _replay(http, "spans_next", ids) == {"sequence_id": 1}
        span = await _replay(http, "add_span", ids)
        assert span == RECORDED["add_span"]["req"]["json"] | {"rollout_id": ids["ro-6e800b2dbc59"]} | {
            "attempt_id": ids["at-d6135fe3"]
        }
        assert await _replay(http, "add_span_duplicate", ids) is None
        worker = await _replay(http, "worker_heartbeat", ids)
        assert worker["current_attempt_id"] == ids["at-d6135fe3"]
        deadline = asyncio.get_running_loop().time() + 30
        while (seen := (await http.get("/v1/agl/workers/Worker-0")).json()) is None:
            assert asyncio.get_running_loop().time() < deadline, "the heartbeat never reached the workers read model"
            await asyncio.sleep(0.2)
        assert seen["heartbeat_stats"] == {"cpu": 0.5}

        null_status = await _replay(http, "update_attempt_null_status", ids)
        assert null_status == RECORDED["update_attempt_null_status"]["body"]
        ended = await _replay(http, "update_attempt", ids)
        assert ended["status"] == "succeeded"
        assert ended["end_time"] is not None

        # Read right after the update: the read waits until the read model has applied the decision.
        rollout = await _replay(http, "get_rollout", ids)
        assert rollout["status"] == "succeeded"
        assert rollout["attempt"]["status"] == "succeeded"

        # Ours on purpose: 200 null for a rollout that does not exist (theirs fails with 500; the client takes null).
        missing = await _call(http, "get_rollout_missing", ids)
        assert (missing.status_code, missing.json()) == (200, None)
        # Ours on purpose: 404 naming the rollout (theirs: 500 with a ValueError's traceback).
        update_missing = await _call(http, "update_rollout_missing", ids)
        assert update_missing.status_code == 404
        assert "ro-doesnotexist" in update_missing.json()["detail"]

        spans = await _eventually(http, "search_spans", ids, lambda p: p["total"] == 1)
        assert [s["span_id"] for s in spans["items"]] == ["bbbbbbbbbbbbbbbb"]
        page = await _replay(http, "query_rollouts_get", ids)
        assert (page["total"], page["limit"]) == (1, 10)
        assert await _replay(http, "bad_sort", ids) == RECORDED["bad_sort"]["body"]
        waited = await _replay(http, "wait", ids)
        assert [r["rollout_id"] for r in waited] == [ids["ro-6e800b2dbc59"]], "unknown ids are silently absent"
        latest = await _replay(http, "latest_attempt", ids)
        assert latest["attempt_id"] == ids["at-d6135fe3"]

        stats = (await _call(http, "statistics", ids)).json()
        recorded_counts = {
            k for k in RECORDED["statistics"]["body"] if k.startswith("total_") and k != "total_span_bytes"
        }
        assert recorded_counts | {"name", "uptime"} == set(stats)
        started = await _replay(http, "start_rollout", ids)
        assert (started["status"], started["attempt"]["worker_id"], started["mode"]) == ("preparing", "Worker-1", "val")
        assert started["resources_id"] == added["resources_id"]


async def test_pagination_and_null_rules_answer_400(agl_live: LiveServices) -> None:
    async with httpx.AsyncClient(base_url=f"{agl_live.api_url}/v1/agl", timeout=30) as http:
        for body, detail in [
            ({"limit": 0}, "Limit must be greater than 0 or -1 for no limit"),
            ({"limit": -2}, "Limit must be greater than 0 or -1 for no limit"),
            ({"offset": -1}, "Offset must be greater than or equal to 0"),
            ({"sort_order": "up"}, "Invalid sort_order: up, allowed values are: asc, desc"),
            ({"filter_logic": "xor"}, "Invalid filter_logic: xor, allowed values are: and, or"),
        ]:
            answer = await http.post("/rollouts/search", json=body)
            assert (answer.status_code, answer.json()) == (400, {"detail": detail}), body
        assert (await http.get("/rollouts", params={"limit": "0"})).status_code == 400
        assert (await http.post("/workers/search", json={"sort_by": "nope"})).status_code == 400
        assert (await http.get("/resources/rs-none")).json() is None
        assert (await http.get("/workers/Worker-none")).json() is None
        assert (await http.get("/rollouts/ro-none/attempts/latest")).json() is None
        (queued,) = (await http.post("/queues/rollouts/enqueue", json={"rollouts": [{"input": 1}]})).json()
        for field in ("status", "config"):
            answer = await http.post(f"/rollouts/{queued['rollout_id']}", json={field: None})
            assert answer.json() == {"detail": f"{field} is invalid; it cannot be a null value."}
        assert (await http.post("/workers/Worker-9", json={"heartbeat_stats": None})).status_code == 400
        # What their models accept but our events' bounds refuse is 422 naming the field, never a 500.
        long_id = "r" * 300
        span = RECORDED["add_span"]["req"]["json"] | {"rollout_id": long_id}
        for path, body, field in [
            ("/spans", span, "rollout_id"),
            ("/spans/next", {"rollout_id": long_id, "attempt_id": "at-1"}, "rollout_id"),
            ("/queues/rollouts/enqueue", {"rollouts": [{"input": 1, "config": {"retry_condition": ["x"]}}]}, "config"),
            ("/queues/rollouts/dequeue", {"worker_id": "no/slash"}, "worker_id"),
        ]:
            refused = await http.post(path, json=body)
            assert refused.status_code == 422, (path, refused.text)
            assert field in refused.text, (path, refused.text)
        cancelled = await http.post(f"/rollouts/{queued['rollout_id']}", json={"status": "cancelled"})
        assert cancelled.json()["status"] == "cancelled"
        # Terminal states are final: a late success does not turn a cancelled rollout succeeded.
        for status in ("queuing", "succeeded"):
            refused = await http.post(f"/rollouts/{queued['rollout_id']}", json={"status": status})
            assert refused.status_code == 400
    async with httpx.AsyncClient(base_url=agl_live.api_url, timeout=30) as http:
        assert (await http.post("/v1/metrics")).status_code == 501
