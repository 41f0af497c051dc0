"""`make demo`: the main job, end to end, on the embedded stack.

1. `agl up` as a user would run it (Apache Kafka or Tansu, PostgreSQL 18, the local LLM, the API, the projections
   and the watchdog), waiting for it to say it is ready; then `agl smoke`.
2. Enqueue the example task set (`examples/math_tasks.jsonl`) through the API.
3. Run `agl runner` with the example agent (`examples/math_agent.py`): it claims the rollouts, asks the LLM,
   grades the answer, reports spans, the reward and the outcome.
4. Wait until every rollout has ended, print a table (status, attempts, reward, latency, and the training
   triplet each LLM call became: token ids and reward), export the triplets to Parquet, and stop everything with
   SIGINT, as Ctrl-C would.

The agent calls the LLM through the API's proxy (the ``proxy_llm`` resource `agl up` publishes), which records
each call with its token ids; the triplet projection turns those spans and the reward into triplets.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 900  # the first run downloads Apache Kafka's jars from Maven Central
TASKS = REPO / "examples" / "math_tasks.jsonl"
AGENT = "examples.math_agent:math_agent"
WAIT_S = 600
EXPORT = REPO / ".agl" / "demo-triplets.parquet"


def start_stack() -> tuple[subprocess.Popen[str], str | None]:
    up = subprocess.Popen([str(BIN / "agl"), "up"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert up.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    api_url = None
    for line in up.stdout:
        print(line, end="", flush=True)
        if line.strip().startswith("api") and "http://" in line:
            api_url = "http://" + line.split("http://", 1)[1].split()[0]
        if "Ctrl-C or `agl down`" in line:
            return up, api_url or "http://127.0.0.1:8000"
        if time.monotonic() > deadline:
            break
    return up, None


def enqueue(api: httpx.Client) -> list[tuple[str, dict[str, Any]]]:
    tasks = [json.loads(line) for line in TASKS.read_text().splitlines() if line.strip()]
    answer = api.post("/v1/rollouts", json=[{"input": task, "mode": "val"} for task in tasks])
    answer.raise_for_status()
    ids = [r["rollout_id"] for r in answer.json()["rollouts"]]
    return list(zip(ids, tasks, strict=True))


def wait_all(api: httpx.Client, ids: list[str]) -> int:
    """Wait (each call at most 5 minutes, the route's limit) until every rollout has ended; how many did."""
    deadline = time.monotonic() + WAIT_S
    ended = 0
    while time.monotonic() < deadline:
        timeout = min(300.0, deadline - time.monotonic())
        answer = api.post("/v1/rollouts/wait", json={"rollout_ids": ids, "timeout_s": timeout}, timeout=timeout + 30)
        answer.raise_for_status()
        ended = len(answer.json()["rollouts"])
        if ended == len(ids):
            break
    return ended


def reward_of(api: httpx.Client, rollout_id: str) -> float | None:
    events = api.get(f"/v1/rollouts/{rollout_id}/events").json().get("events", [])
    rewards = [e["event"]["value"] for e in events if e["type"] == "reward.assigned"]
    return rewards[-1] if rewards else None


def latency_s(rollout: dict[str, Any]) -> float | None:
    if not rollout.get("end_time") or not rollout.get("enqueued_at"):
        return None
    ended, enqueued = datetime.fromisoformat(rollout["end_time"]), datetime.fromisoformat(rollout["enqueued_at"])
    return (ended - enqueued).total_seconds()


def triplets_of(api: httpx.Client, rollout_id: str, reward: float | None) -> list[dict[str, Any]]:
    """The rollout's triplets, once the triplet projection has its spans and reward (a moment after its end)."""
    deadline = time.monotonic() + 30
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = api.get(f"/v1/rollouts/{rollout_id}/triplets").json().get("items", [])
        if rows and (reward is None or all(r["reward"] is not None for r in rows)):
            break
        time.sleep(0.2)
    return rows


def table(api: httpx.Client, enqueued: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    print(f"\n{'rollout':<38} {'question':<22} {'status':<10} {'attempts':>8} {'reward':>7} {'latency':>8}"
          f" {'triplets':>8} {'tokens in/out':>13}")  # fmt: skip
    for rollout_id, task in enqueued:
        rollout = api.get(f"/v1/rollouts/{rollout_id}").json()
        reward = reward_of(api, rollout_id)
        latency = latency_s(rollout)
        triplets = triplets_of(api, rollout_id, reward)
        tokens = "/".join(f"{len(t['prompt_token_ids'])}:{len(t['response_token_ids'])}" for t in triplets)
        rows.append({**rollout, "reward": reward, "triplets": triplets})
        print(
            f"{rollout_id:<38} {str(task.get('question', task))[:22]:<22} {rollout['status']:<10} "
            f"{rollout['attempt_count']:>8} {'-' if reward is None else f'{reward:.1f}':>7} "
            f"{'-' if latency is None else f'{latency:.1f}s':>8} {len(triplets):>8} {tokens or '-':>13}"
        )
    succeeded = sum(r["status"] == "succeeded" for r in rows)
    rewarded = [r["reward"] for r in rows if r["reward"] is not None]
    mean = sum(rewarded) / len(rewarded) if rewarded else 0.0
    trained = sum(len(r["triplets"]) for r in rows)
    print(f"\n{succeeded} of {len(rows)} rollouts succeeded; mean reward {mean:.2f} over {len(rewarded)} rewards; "
          f"{trained} training triplets with token ids\n")  # fmt: skip
    return rows


def export(api: httpx.Client) -> int:
    """Download every triplet as Parquet (streamed by the API); how many rows the file holds."""
    import pyarrow.parquet as pq

    EXPORT.parent.mkdir(parents=True, exist_ok=True)
    with api.stream("GET", "/v1/triplets/export", params={"format": "parquet"}) as answer, EXPORT.open("wb") as out:
        answer.raise_for_status()
        for chunk in answer.iter_bytes():
            out.write(chunk)
    rows = pq.ParquetFile(EXPORT).metadata.num_rows
    print(f"demo: {rows} triplets exported to {EXPORT.relative_to(REPO)} (Parquet)")
    return rows


def run_demo(api_url: str) -> int:
    if subprocess.call([str(BIN / "agl"), "smoke"], cwd=REPO):
        return 1
    from producers.auth.discovery import auth_headers, find_api_key

    # The admin key `agl up` saved in .agl/api-key (the API asks for a key on every route but health).
    with httpx.Client(base_url=api_url, timeout=60, headers=auth_headers(find_api_key())) as api:
        enqueued = enqueue(api)
        print(f"demo: enqueued {len(enqueued)} rollouts from {TASKS.relative_to(REPO)}; starting a runner", flush=True)
        runner = subprocess.Popen(
            [str(BIN / "agl"), "runner", "--agent", AGENT, "--api", api_url, "--slots", "2"],
            cwd=REPO,
        )
        try:
            ended = wait_all(api, [rollout_id for rollout_id, _ in enqueued])
        finally:
            runner.send_signal(signal.SIGTERM)  # drains: nothing is running any more
            runner.wait(timeout=60)
        rows = table(api, enqueued)
        exported = export(api)
        if ended < len(enqueued):
            print(f"demo: only {ended} of {len(enqueued)} rollouts ended within {WAIT_S}s", file=sys.stderr)
            return 1
        if not all(r["triplets"] and r["triplets"][0]["prompt_token_ids"] for r in rows) or exported < len(rows):
            print("demo: a rollout has no triplet with token ids", file=sys.stderr)
            return 1
        return 0 if all(r["status"] == "succeeded" for r in rows) else 1


def main() -> int:
    up, api_url = start_stack()
    code = 1
    try:
        if api_url is not None:
            code = run_demo(api_url) or subprocess.call([str(BIN / "agl"), "status"], cwd=REPO)
        else:
            print("demo: the stack did not come up", file=sys.stderr)
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=120)
        print(rest, end="")
    return code or up.returncode


if __name__ == "__main__":
    sys.exit(main())
