"""Cumulative regret of the assignment router: Thompson sampling against random and round-robin assignment.

A synthetic workload, no LLM: each task kind has candidate agent types, one of them truly better (a higher chance
of a reward of 1). Tasks of random kinds arrive one by one; a policy picks a type, the reward is drawn from the
truth, and the policy learns from it (Thompson: the router's own :func:`producers.router_policy.thompson`, fed the
same evidence the router read model keeps). Regret of a task = best type's success chance - the chosen type's;
the figures are summed over the tasks and averaged over seeds.

``--real N`` also runs the real path at a small size: N tasks enqueued through the command API in rounds (the
router decides at enqueue, the router projection folds decisions and the rewards posted back), on an embedded
broker and PostgreSQL (or ``AGL_KAFKA_BOOTSTRAP`` / ``AGL_DATABASE_URL``).

    python -m bench.router [--tasks 2000] [--seeds 5] [--real 200]

Last line: ``thompson_regret=... random_regret=... round_robin_regret=...`` (plus ``real_thompson_regret=...``
with ``--real``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import statistics
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from producers.router_policy import Evidence, thompson

#: (task kind) -> (agent type) -> chance of a reward of 1; the first-listed type is not always the best.
TRUTH: dict[str, dict[str, float]] = {
    "python": {"data_analyst": 0.55, "qa_tester": 0.75, "web_developer": 0.45},
    "web": {"web_developer": 0.8, "general_assistant": 0.6},
    "analysis": {"data_analyst": 0.7, "general_assistant": 0.5, "qa_tester": 0.4},
    "security": {"security_expert": 0.65, "devops_engineer": 0.55},
}

Policy = Callable[[str, str, dict[tuple[str, str], Evidence]], str]


def best(kind: str) -> float:
    return max(TRUTH[kind].values())


def thompson_policy(kind: str, task_id: str, evidence: dict[tuple[str, str], Evidence]) -> str:
    types = tuple(TRUTH[kind])
    return thompson(types, {t: evidence.get((kind, t), Evidence()) for t in types}, task_id).agent_type


def random_policy(seed: int) -> Policy:
    rng = random.Random(seed)

    def choose(kind: str, _: str, __: dict[tuple[str, str], Evidence]) -> str:
        return rng.choice(tuple(TRUTH[kind]))

    return choose


def round_robin_policy() -> Policy:
    cycles = {kind: itertools.cycle(TRUTH[kind]) for kind in TRUTH}

    def choose(kind: str, _: str, __: dict[tuple[str, str], Evidence]) -> str:
        return next(cycles[kind])

    return choose


def regret(policy: Policy, tasks: int, seed: int) -> float:
    """Cumulative expected regret of ``policy`` over ``tasks`` tasks of the world drawn from ``seed``."""
    world = random.Random(seed)
    evidence: dict[tuple[str, str], Evidence] = defaultdict(Evidence)
    total = 0.0
    for i in range(tasks):
        kind = world.choice(tuple(TRUTH))
        chosen = policy(kind, f"ro-{seed}-{i}", evidence)
        reward = 1.0 if world.random() < TRUTH[kind][chosen] else 0.0
        seen = evidence[kind, chosen]
        evidence[kind, chosen] = Evidence(seen.successes + reward, seen.failures + 1 - reward)
        total += best(kind) - TRUTH[kind][chosen]
    return total


def simulate(tasks: int, seeds: int) -> dict[str, float]:
    figures: dict[str, list[float]] = defaultdict(list)
    for seed in range(seeds):
        figures["thompson"].append(regret(thompson_policy, tasks, seed))
        figures["random"].append(regret(random_policy(seed), tasks, seed))
        figures["round_robin"].append(regret(round_robin_policy(), tasks, seed))
    return {name: statistics.fmean(values) for name, values in figures.items()}


# -- the real path ----------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def real_api(broker: str) -> AsyncIterator[tuple[Any, str]]:
    """The API in-process and the router projection running, on fresh topics."""
    # Imported here: the synthetic part needs neither a broker nor the stack's modules.
    import uuid

    import httpx
    import psycopg
    from asgi_lifespan import LifespanManager

    from agl.app import create_app
    from agl.config import Settings
    from agl.stack.migrations import migrate_stack
    from bench._stack import temporary_services
    from consumers.worker import ProjectionWorker
    from producers.admin import ensure_topics
    from projections.migrations import migrate_core
    from projections.router import PROJECTION
    from schemas.topics import TOPICS

    async with temporary_services(broker) as (bootstrap, database_url, _):
        prefix = f"bench{uuid.uuid4().hex[:8]}."
        await ensure_topics(bootstrap, TOPICS, prefix=prefix)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await migrate_core(conn)
            await migrate_stack(conn)
        settings = Settings(kafka_bootstrap=bootstrap, database_url=database_url, topic_prefix=prefix)
        app = create_app(settings)
        worker = ProjectionWorker(
            PROJECTION, bootstrap=bootstrap, database_url=database_url, topic_prefix=prefix, use_group=False
        )
        stop = asyncio.Event()
        await worker.start()
        task = asyncio.create_task(worker.run(stop))
        try:
            async with (
                LifespanManager(app, startup_timeout=120),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=60) as http,
            ):
                yield http, database_url
        finally:
            stop.set()
            await task
            await worker.stop()


async def real_regret(tasks: int, rounds: int, broker: str) -> float:
    """Enqueue ``tasks`` python tasks in ``rounds`` requests; reward each by the truth; wait for the fold."""
    truth = TRUTH["python"]
    world = random.Random(0)
    total = 0.0
    async with real_api(broker) as (http, database_url):
        per_round = max(1, tasks // rounds)
        for r in range(rounds):
            body = [{"input": {"n": r * per_round + i}, "metadata": {"task_kind": "python"}} for i in range(per_round)]
            answer = (await http.post("/v1/rollouts", json=body)).json()
            token = answer["position"]
            router = (await http.get("/v1/router", params={"after": token})).json()
            mine = {a["agent_type"]: a["assignments"] for a in router["arms"]}
            chosen = await _decisions(database_url, [x["rollout_id"] for x in answer["rollouts"]])
            rewards = [
                {"rollout_id": rollout_id, "value": 1.0 if world.random() < truth[t] else 0.0}
                for rollout_id, t in chosen.items()
            ]
            total += sum(best("python") - truth[t] for t in chosen.values())
            posted = (await http.post("/v1/rewards", json=rewards)).json()
            await http.get("/v1/router", params={"after": posted["position"]})
            print(f"round {r + 1}/{rounds}: assignments so far {mine}", flush=True)
    return total


async def _decisions(database_url: str, rollout_ids: list[str]) -> dict[str, str]:
    """Each rollout's chosen type, read from its stored event's requirement ``agent:<type>`` (the command table)."""
    import psycopg

    from schemas import RolloutEnqueued, decode

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT event FROM command_rollouts WHERE rollout_id = ANY(%s)", (rollout_ids,))
        found: dict[str, str] = {}
        for (text,) in await cur.fetchall():
            event = decode(text.encode())
            assert isinstance(event, RolloutEnqueued)
            caps = event.required_capabilities
            found[event.rollout_id] = next(c.removeprefix("agent:") for c in caps if c.startswith("agent:"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--real", type=int, default=0, help="tasks through the API (0 = skip the real path)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--broker", default="auto")
    args = parser.parse_args()
    figures = simulate(args.tasks, args.seeds)
    line = " ".join(f"{name}_regret={value:.1f}" for name, value in figures.items())
    if args.real:
        real = asyncio.run(real_regret(args.real, args.rounds, args.broker))
        rand = args.real * (best("python") - statistics.fmean(TRUTH["python"].values()))
        print(f"real path: {args.real} tasks, regret {real:.1f} (random would expect {rand:.1f})", flush=True)
        line += f" real_thompson_regret={real:.1f} real_random_expected={rand:.1f}"
    print(f"tasks={args.tasks} seeds={args.seeds} kinds={len(TRUTH)}", flush=True)
    print(line, flush=True)


if __name__ == "__main__":
    main()
