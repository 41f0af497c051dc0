"""A restart of the memory-only Tansu broker loses nothing: `agl up` restores the log from the event archive."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from tests.stack.test_cli import Up, agl, stack_env

pytestmark = pytest.mark.slow


def enqueue(api: str, rollout_ids: list[str]) -> str:
    body = [{"rollout_id": r, "input": {"question": r}, "mode": "train"} for r in rollout_ids]
    answer = httpx.post(f"{api}/v1/rollouts", json=body, timeout=30)
    assert answer.status_code == 202, answer.text
    token: str = answer.json()["position"]
    return token


def listed(api: str, after: str | None = None) -> list[str]:
    params: dict[str, str | int] = {"limit": 1000}
    if after:
        params.update(after=after, wait_ms=20_000)
    answer = httpx.get(f"{api}/v1/rollouts", params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return sorted(item["rollout_id"] for item in answer.json()["items"])


def wait_archived(url: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            found = conn.execute("SELECT count(*) FROM archive_g1.events").fetchone()
        if found is not None and found[0] >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"the archive did not reach {count} records")


def test_a_tansu_restart_is_restored_from_the_archive_and_consumption_resumes(tmp_path):
    env = stack_env(tmp_path / "d", AGL_BROKER="tansu")
    api = f"http://127.0.0.1:{env['AGL_API_PORT']}"
    url = f"postgresql://postgres@127.0.0.1:{env['AGL_POSTGRES_PORT']}/agl"
    first = sorted(f"ro-before-{n}" for n in range(12))
    up = Up(env)
    token = enqueue(api, first)
    assert listed(api, after=token) == first
    wait_archived(url, len(first))
    assert up.interrupt()[0] == 0

    up = Up(env)
    output = "".join(up.output)
    assert f"restored {len(first)} records" in output, output
    assert listed(api) == first, "the read model survived the restart"
    # The restored log continues where the stored positions stand: a new event is applied, nothing is skipped
    # and nothing is applied twice.
    token = enqueue(api, ["ro-after"])
    assert listed(api, after=token) == sorted([*first, "ro-after"])
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT rollout_id) FROM rollouts_g1.rollouts").fetchone()
    assert rows == (13, 13)
    assert up.interrupt()[0] == 0
    status = agl(env, "status")
    assert status.returncode == 1
