"""Agent Lightning v0.3 running the rollout lifecycle of `bench/lifecycle.py`, as fast as its store allows.

Runs in its own virtual environment (`agentlightning==0.3.*`, created by `bench/lifecycle.py`), never in the
project's: it imports nothing of ours. Two figures, each after a warm-up, printed as one JSON object on the last
line:

- ``peer_rps``: ``agentlightning.cli.store`` (``LightningStoreServer`` over ``InMemoryLightningStore``) in its
  own process on loopback, and ``--runners`` runner processes talking to it through ``LightningStoreClient``,
  how runners on other machines use it.
- ``peer_inproc_rps``: the same runner loop calling an ``InMemoryLightningStore`` in-process (no HTTP at all).

Per rollout, the operations of ours: enqueue (batches of ``--enqueue-batch``), claim (a runner's claim loop
dequeues up to its free slots at once and polls every ``IDLE_POLL_S`` when nothing is queued, as v0.3 has no
long poll), fetch the rollout's resources, three spans and a reward span (``agentlightning.annotation``; v0.3
encodes rewards as spans), then the attempt ``succeeded``. Nothing is left on the table: sequence ids are chosen
by the runner (no ``/spans/next`` round trips) and the four spans are sent at once, while the stock runner asks
for each sequence id and sends spans one after the other. There is no explicit ``running`` report: in v0.3 the
first span makes the attempt running. The clock stops when ``wait_for_rollouts`` says every rollout succeeded.

    python bench/peer_agentlightning.py --rollouts 500 --inproc-rollouts 3000 --runners 2 --slots 256
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import urllib.request
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

# LiteLLM (imported by agentlightning) fetches a price list at import unless told not to; no network here.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from agentlightning.store import (  # type: ignore[import-not-found]
    InMemoryLightningStore,
    LightningStoreClient,
)
from agentlightning.store.base import LightningStore  # type: ignore[import-not-found]
from agentlightning.types import LLM, EnqueueRolloutRequest, Span  # type: ignore[import-not-found]

#: How long an idle claim loop waits before asking again (v0.3 has no long poll; its stock runner waits 5 s).
IDLE_POLL_S = 0.02
#: How often the driver asks whether every rollout succeeded.
DONE_POLL_S = 0.05
DONE_WINDOW = 64
STEPS = ("agent.plan", "openai.chat.completion", "agent.answer")
REWARD = {"agentlightning.reward.0.name": "reward", "agentlightning.reward.0.value": 1.0}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rollouts", type=int, default=500, help="rollouts through the client-server store")
    parser.add_argument("--inproc-rollouts", type=int, default=3000, help="rollouts through the in-process store")
    parser.add_argument("--warmup", type=int, default=100, help="rollouts run before each measurement")
    parser.add_argument("--runners", type=int, default=2, help="runner processes (client-server)")
    parser.add_argument("--slots", type=int, default=256, help="attempts each runner runs at once")
    parser.add_argument("--enqueue-batch", type=int, default=100)
    return parser.parse_args()


# -- one runner ---------------------------------------------------------------------------------------------------
async def run_attempt(store: LightningStore, attempted: Any, in_process: bool) -> None:
    rid, aid = attempted.rollout_id, attempted.attempt.attempt_id
    if attempted.resources_id:
        await store.get_resources_by_id(attempted.resources_id)
    now = time.time()
    spans = [
        Span.from_attributes(
            attributes={"bench.step": i, "bench.task": str(attempted.input)},
            name=name,
            rollout_id=rid,
            attempt_id=aid,
            sequence_id=i + 1,
            start_time=now,
            end_time=now,
        )
        for i, name in enumerate(STEPS)
    ]
    spans.append(
        Span.from_attributes(
            attributes=REWARD,
            name="agentlightning.annotation",
            rollout_id=rid,
            attempt_id=aid,
            sequence_id=len(STEPS) + 1,
            start_time=now,
            end_time=now,
        )
    )
    if in_process:
        await store.add_many_spans(spans)  # one call: the in-memory store's bulk path
    else:
        # The client sends add_many_spans one request per span, one after the other; at once is faster.
        await asyncio.gather(*(store.add_span(span) for span in spans))
    await store.update_attempt(rid, aid, status="succeeded")


async def claim_loop(store: LightningStore, worker_id: str, slots: int, stop: asyncio.Event, in_process: bool) -> None:
    """Claim up to the free slots at once and run each claimed attempt in its own task."""
    free = asyncio.Semaphore(slots)
    running: set[asyncio.Task[None]] = set()

    async def attempt(attempted: Any) -> None:
        try:
            await run_attempt(store, attempted, in_process)
        finally:
            free.release()

    while not stop.is_set():
        await free.acquire()
        n = 1
        while not free.locked() and n < slots:
            await free.acquire()
            n += 1
        claims = await store.dequeue_many_rollouts(limit=n, worker_id=worker_id)
        for _ in range(n - len(claims)):
            free.release()
        for claimed in claims:
            task = asyncio.create_task(attempt(claimed))
            running.add(task)
            task.add_done_callback(running.discard)
        if not claims:
            await asyncio.sleep(IDLE_POLL_S)
    await asyncio.gather(*running)


def runner_process(url: str, worker_id: str, slots: int, ready: MpEvent, stop: MpEvent) -> None:
    async def main() -> None:
        store = LightningStoreClient(url)
        await store.get_latest_resources()  # opens the session before the clock starts
        stopped = asyncio.Event()
        ready.set()

        # The stop signal crosses processes; the claim loop waits on an asyncio.Event set from it.
        watcher = asyncio.create_task(asyncio.to_thread(stop.wait))
        watcher.add_done_callback(lambda _: stopped.set())
        await claim_loop(store, worker_id, slots, stopped, in_process=False)
        await watcher

    asyncio.run(main())


# -- the driver ---------------------------------------------------------------------------------------------------
async def enqueue_and_wait(store: LightningStore, count: int, batch: int, tag: str) -> float:
    """Enqueue ``count`` rollouts; return the seconds until every one of them has succeeded."""
    t0 = time.perf_counter()
    ids: list[str] = []

    async def enqueue() -> None:
        for start in range(0, count, batch):
            requests = [
                EnqueueRolloutRequest(input={"question": f"{tag}-{i}"}, mode="train")
                for i in range(start, min(count, start + batch))
            ]
            ids.extend(r.rollout_id for r in await store.enqueue_many_rollouts(requests))

    enqueuing = asyncio.create_task(enqueue())
    done: set[str] = set()
    while not (enqueuing.done() and len(done) == count):
        await asyncio.sleep(DONE_POLL_S)
        # Rollouts are claimed in enqueue order: asking about the oldest few pending ones is enough, and asking
        # about all of them at every poll would cost the store more than the work measured.
        pending = [i for i in ids if i not in done][:DONE_WINDOW]
        if pending:
            finished = await store.wait_for_rollouts(rollout_ids=pending, timeout=0)
            bad = [r.rollout_id for r in finished if r.status != "succeeded"]
            if bad:
                raise SystemExit(f"{len(bad)} rollouts ended other than succeeded, e.g. {bad[0]}")
            done.update(r.rollout_id for r in finished)
    await enqueuing
    return time.perf_counter() - t0


async def measure_inproc(args: argparse.Namespace) -> float:
    store = InMemoryLightningStore()
    await store.add_resources({"main_llm": LLM(endpoint="http://127.0.0.1:9/v1", model="bench-noop")})
    stop = asyncio.Event()
    loops = [
        asyncio.create_task(claim_loop(store, f"inproc-{i}", args.slots, stop, in_process=True))
        for i in range(args.runners)
    ]
    await enqueue_and_wait(store, args.warmup, args.enqueue_batch, "warmup")
    seconds = await enqueue_and_wait(store, args.inproc_rollouts, args.enqueue_batch, "inproc")
    stop.set()
    await asyncio.gather(*loops)
    return float(args.inproc_rollouts / seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the Agent Lightning store server exited with {server.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/v1/agl/health", timeout=1) as answer:  # noqa: S310
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"the Agent Lightning store server did not answer at {url} within {timeout_s:.0f}s")


def measure_client_server(args: argparse.Namespace) -> float:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "agentlightning.cli.store", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen([*argv, "--log-level", "WARNING"])
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    runners: list[Any] = []
    try:
        wait_healthy(url, server)
        readies = []
        for i in range(args.runners):
            ready = ctx.Event()
            proc = ctx.Process(target=runner_process, args=(url, f"peer-{i}", args.slots, ready, stop), daemon=True)
            proc.start()
            runners.append(proc)
            readies.append(ready)

        async def drive() -> float:
            store = LightningStoreClient(url)
            await store.add_resources({"main_llm": LLM(endpoint="http://127.0.0.1:9/v1", model="bench-noop")})
            await asyncio.gather(*(asyncio.to_thread(r.wait, 120) for r in readies))
            await enqueue_and_wait(store, args.warmup, args.enqueue_batch, "warmup")
            return await enqueue_and_wait(store, args.rollouts, args.enqueue_batch, "server")

        seconds = asyncio.run(drive())
        return float(args.rollouts / seconds)
    finally:
        stop.set()
        for proc in runners:
            proc.join(30)
        server.terminate()
        server.wait(30)


def main() -> None:
    args = parse_args()
    inproc = asyncio.run(measure_inproc(args))
    print(f"peer in-process: {inproc:,.0f} rollouts/s", file=sys.stderr, flush=True)
    server = measure_client_server(args)
    print(f"peer client-server: {server:,.0f} rollouts/s", file=sys.stderr, flush=True)
    figures = {"peer_rps": server, "peer_inproc_rps": inproc, "rollouts": args.rollouts}
    figures |= {"inproc_rollouts": args.inproc_rollouts, "runners": args.runners, "slots": args.slots}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
