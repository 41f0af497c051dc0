"""Many mixed tasks across the six agent pools, on the local LLM, end to end.

The stack `agl up --agents` runs (Apache Kafka or Tansu, PostgreSQL, the embedded llama.cpp with SmolLM2-135M
unless ``AGL_LLM_ENDPOINT`` names another, the API with its LLM proxy, projections, watchdog, and the agent pools
as supervised ``agl runner`` processes), started here on free ports in a temporary directory. Once every instance
is healthy in ``GET /v1/agents``, ``--tasks`` tasks taken round-robin from the shipped task sets
(``agl/agents/tasks/``) are enqueued at once, each requiring its kind's capabilities, and the clock runs until
``POST /v1/rollouts/wait`` has them all ended. A task's latency is its rollout's enqueue-to-end time in the read
model; a task fails when its rollout does not end ``succeeded`` (a wrong answer is reward 0, not a failure).

The pools are the shipped ones (``agl/agents/agents.toml``: one instance per type, the QA tester, whose answers
are twice as long, with twice the slots); ``--instances`` / ``--slots`` set every pool's instead.

    .venv/bin/python bench/agents.py [--tasks 120] [--instances N] [--slots N] [--broker tansu]

Last line: ``tasks=<n> failure_rate=<0..1> p50_s=<s> p95_s=<s> tasks_per_s=<n>``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agl.agents.pools import load_pools
from agl.agents.tasks import mixed_batch, rollout_body
from agl.config import BrokerChoice, Settings
from agl.stack._process import free_ports
from agl.stack.stack import Stack
from bench._stack import KAFKA_LIBS

#: Rollout ids per ``POST /v1/rollouts/wait`` (its limit is 1000) and the longest wait it takes, in seconds.
WAIT_CHUNK, MAX_WAIT_S = 500, 300.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=120)
    parser.add_argument("--instances", type=int, default=None, help="instances of every type (default: shipped)")
    parser.add_argument("--slots", type=int, default=None, help="slots of every instance (default: shipped)")
    parser.add_argument("--broker", choices=["auto", "kafka", "tansu"], default="auto")
    parser.add_argument("--routed", action="store_true", help="let the assignment router pick each task's type")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for every task to end")
    return parser.parse_args()


async def wait_healthy(http: httpx.AsyncClient, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = await http.get("/v1/agents", params={"health": "healthy"})
        if answer.status_code == 200 and answer.json()["total"] >= count:
            return
        await asyncio.sleep(0.5)
    raise SystemExit(f"the agents did not all become healthy within {timeout:.0f} s")


async def wait_all(http: httpx.AsyncClient, ids: list[str], *, deadline: float) -> list[dict[str, Any]]:
    """The rollouts once all have ended (or what has ended by ``deadline``), asking in chunks the API accepts."""
    ended: dict[str, dict[str, Any]] = {}
    while len(ended) < len(ids) and time.monotonic() < deadline:
        pending = [i for i in ids if i not in ended][:WAIT_CHUNK]
        timeout_s = min(MAX_WAIT_S, max(1.0, deadline - time.monotonic()))
        waited = await http.post("/v1/rollouts/wait", json={"rollout_ids": pending, "timeout_s": timeout_s})
        waited.raise_for_status()
        ended.update((r["rollout_id"], r) for r in waited.json()["rollouts"])
    return list(ended.values())


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    chosen = [
        replace(pool, instances=args.instances or pool.instances, slots=args.slots or pool.slots)
        for pool in load_pools()
    ]
    pools = workdir / "agents.toml"
    pools.write_text(
        "".join(f"[pools.{p.agent_type}]\ninstances = {p.instances}\nslots = {p.slots}\n\n" for p in chosen)
    )
    kafka_port, controller_port, postgres_port, api_port = free_ports(4)
    settings = Settings(
        data_dir=workdir, kafka_port=kafka_port, kafka_controller_port=controller_port, kafka_libs_dir=KAFKA_LIBS,
        postgres_port=postgres_port, api_port=api_port, topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        startup_timeout_s=180,
    )  # fmt: skip
    stack = Stack(settings, broker=None if args.broker == "auto" else cast("BrokerChoice", args.broker), agents=pools)
    await stack.start()
    try:
        assert stack.api_url is not None
        print(f"stack: broker {stack.broker_choice}, API {stack.api_url}, LLM {stack.llm_model}", flush=True)
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=args.timeout + 60) as http:
            await wait_healthy(http, sum(p.instances for p in chosen))
            tasks = mixed_batch(args.tasks)
            t0 = time.monotonic()
            answer = await http.post(
                "/v1/rollouts", json=[rollout_body(t, routed=args.routed, config={"max_attempts": 2}) for t in tasks]
            )
            answer.raise_for_status()
            ids = [r["rollout_id"] for r in answer.json()["rollouts"]]
            ended = await wait_all(http, ids, deadline=t0 + args.timeout)
            elapsed = time.monotonic() - t0
    finally:
        await stack.stop()
    succeeded = [r for r in ended if r["status"] == "succeeded"]
    latencies = sorted(
        (datetime.fromisoformat(r["end_time"]) - datetime.fromisoformat(r["enqueued_at"])).total_seconds()
        for r in succeeded
    )
    cuts = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) >= 2 else latencies * 19
    return {
        "tasks": len(ids),
        "failure_rate": 1 - len(succeeded) / len(ids),
        "p50_s": statistics.median(latencies) if latencies else float("nan"),
        "p95_s": cuts[18] if cuts else float("nan"),
        "tasks_per_s": len(succeeded) / elapsed,
    }


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="agl-bench-agents-") as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    print(
        f"tasks={figures['tasks']:.0f} failure_rate={figures['failure_rate']:.3f} p50_s={figures['p50_s']:.2f} "
        f"p95_s={figures['p95_s']:.2f} tasks_per_s={figures['tasks_per_s']:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
