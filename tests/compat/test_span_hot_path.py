"""The stock client's span path (``/spans/next`` then ``/spans``, one request per span, no batching) against ours:
every span lands once, with the sequence ids it was given (unique and increasing per rollout), and the rate is
printed (``-s`` shows it): both routes are one short PostgreSQL transaction each, no Kafka round trip."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.compat.agl_venv import PEER_ENV
from tests.e2e.conftest import LiveServices

pytestmark = [pytest.mark.agl_client, pytest.mark.kafka, pytest.mark.pg, pytest.mark.slow, pytest.mark.timeout(1800)]
SCRIPT = Path(__file__).with_name("agl_peer.py")
SPANS = 400


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_spans_sent_one_request_each_all_land_in_sequence_order(
    agl_live: LiveServices, agl_python: Path, concurrency: int
) -> None:
    async with httpx.AsyncClient(base_url=f"{agl_live.api_url}/v1/agl", timeout=30) as http:
        claimed = (await http.post("/rollouts", json={"input": "spans", "worker_id": "Worker-0"})).json()
        rollout_id, attempt_id = claimed["rollout_id"], claimed["attempt"]["attempt_id"]
        args = [str(SPANS), agl_live.api_url, rollout_id, attempt_id, str(concurrency)]
        done = await asyncio.to_thread(
            subprocess.run,
            [str(agl_python), str(SCRIPT), "spans", *args],
            env={**os.environ, **PEER_ENV},
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"\nstock client, {concurrency} loop(s): {figures['spans_per_s']:.0f} spans/s ({SPANS} spans)")

        deadline = asyncio.get_running_loop().time() + 60
        while True:
            page = (await http.post("/spans/search", json={"rollout_id": rollout_id})).json()
            if page["total"] == SPANS or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
    sequence = [s["sequence_id"] for s in page["items"]]
    assert sequence == list(range(1, SPANS + 1)), "each span once, numbered 1..n by the rollout's counter"
    assert sorted(int(s["span_id"], 16) for s in page["items"]) == list(range(1, SPANS + 1))
