"""Latency of the span, trace and triplet routes over a read model of N spans (default 1M).

Workload: ``bench/triplets.py``'s attempts (ten spans each: an agent span, four LLM calls with token ids, four tool
spans, a reward annotation; a reward event; the enqueue), so 1M spans make 100,000 rollouts and 400,000
triplets. The ``spans`` and ``triplets`` read models are built from the log by ``consumers.rebuild.Rebuild`` (as
`agl projections rebuild` does), then `agl api` runs in its own process and each route is asked ``--requests``
times, one request at a time, for rollouts drawn at random:

- ``spans``: ``GET /v1/rollouts/{id}/spans`` (one page of the rollout's spans);
- ``spans_by_name``: the same, filtered by ``name=openai.chat.completion``;
- ``trace``: ``GET /v1/rollouts/{id}/trace`` (the tree);
- ``rollout_triplets``: ``GET /v1/rollouts/{id}/triplets``;
- ``triplets_filtered``: ``GET /v1/triplets?mode=train&reward_min=0.5&limit=100`` (a page across rollouts) and
  its next page by cursor.

    .venv/bin/python bench/queries.py [--spans 1000000] [--requests 300] [--broker auto|kafka|tansu]

Starts its own broker and PostgreSQL unless AGL_KAFKA_BOOTSTRAP / AGL_DATABASE_URL are set. Last line:
``spans_p95_ms=... spans_by_name_p95_ms=... trace_p95_ms=... rollout_triplets_p95_ms=...
triplets_filtered_p95_ms=... max_p95_ms=<the worst route's p95>`` (goal: max_p95_ms < 200).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import prepared_services
from bench.publish import api_process
from bench.rebuild import produce
from bench.triplets import SPANS_PER_ATTEMPT, make_events
from consumers.rebuild import Rebuild
from projections.spans import PROJECTION as SPANS
from projections.triplets import PROJECTION as TRIPLETS


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(client: httpx.AsyncClient, path: str, params: dict[str, str] | None = None) -> tuple[float, dict]:  # type: ignore[type-arg]
    t0 = time.perf_counter()
    response = await client.get(path, params=params)
    elapsed = (time.perf_counter() - t0) * 1000
    if response.status_code != 200:
        raise SystemExit(f"GET {path} answered {response.status_code}: {response.text[:300]}")
    return elapsed, response.json()


async def measure(url: str, rollouts: int, requests: int) -> dict[str, list[float]]:
    rng = random.Random(3)
    samples: dict[str, list[float]] = {}

    def rollout() -> str:
        return f"ro-{rng.randrange(rollouts):08x}"

    routes: dict[str, Callable[[], tuple[str, dict[str, str] | None]]] = {
        "spans": lambda: (f"/v1/rollouts/{rollout()}/spans", None),
        "spans_by_name": lambda: (f"/v1/rollouts/{rollout()}/spans", {"name": "openai.chat.completion"}),
        "trace": lambda: (f"/v1/rollouts/{rollout()}/trace", None),
        "rollout_triplets": lambda: (f"/v1/rollouts/{rollout()}/triplets", None),
    }
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for name, make in routes.items():
            for _ in range(10):  # warm: connections, plans
                await timed(client, *make())
            got = []
            for _ in range(requests):
                elapsed, body = await timed(client, *make())
                got.append(elapsed)
            samples[name] = got
        # A page of triplets across rollouts, and the page after it by cursor.
        got = []
        params = {"mode": "train", "reward_min": "0.5", "limit": "100"}
        for _ in range(requests // 2):
            elapsed, body = await timed(client, "/v1/triplets", params)
            got.append(elapsed)
            cursor = body["next_cursor"]
            if cursor:
                elapsed, _ = await timed(client, "/v1/triplets", {**params, "cursor": cursor})
                got.append(elapsed)
        samples["triplets_filtered"] = got
    return samples


async def main_async(args: argparse.Namespace) -> None:
    rollouts = max(1, args.spans // SPANS_PER_ATTEMPT)
    events = make_events(args.spans)
    print(f"workload: {len(events)} events, {rollouts} rollouts", flush=True)
    async with prepared_services(args.broker) as ready:
        bootstrap, database_url, prefix, kind = ready.bootstrap, ready.database_url, ready.prefix, ready.kind
        await produce(bootstrap, prefix, events)
        del events
        for projection in (SPANS, TRIPLETS):
            t0 = time.perf_counter()
            rebuild = Rebuild(projection, bootstrap=bootstrap, database_url=database_url, topic_prefix=prefix)
            result = await rebuild.run(asyncio.Event())
            print(f"{projection.name}: {result.events} events built in {time.perf_counter() - t0:.0f}s", flush=True)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute("VACUUM ANALYZE")
        async with api_process(bootstrap, database_url, prefix) as url:
            samples = await measure(url, rollouts, args.requests)
    print(f"broker {kind}, {args.spans} spans:", flush=True)
    p95 = {}
    for name, values in samples.items():
        p95[name] = percentile(values, 0.95)
        print(f"  {name:18} p50 {statistics.median(values):7.1f} ms  p95 {p95[name]:7.1f} ms  ({len(values)} requests)")
    figures = " ".join(f"{name}_p95_ms={value:.1f}" for name, value in p95.items())
    print(f"{figures} max_p95_ms={max(p95.values()):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--broker", choices=["auto", "kafka", "tansu"], default="auto")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
