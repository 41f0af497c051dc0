"""Rollouts per second end to end through the runner protocol, beside Agent Lightning v0.3 in the same run.

Ours: the stack `agl up` runs (API, rollouts and other projections, watchdog; Apache Kafka or Tansu and
PostgreSQL, started here on free ports in a temporary directory unless AGL_KAFKA_BOOTSTRAP / AGL_DATABASE_URL
point elsewhere) and ``--runners`` ``agl runner`` processes with ``--slots`` slots each, talking HTTP to the API,
running a no-op agent (`bench/lifecycle_agent.py`: three spans and a reward). Per rollout: enqueue (batches of
``--enqueue-batch``), a claim that starts the attempt (long poll), the resources, and the finish carrying the three
spans and the reward (reports of all slots batched; the spans recorded as one ``spans.recorded``). The clock runs
from the first enqueue until the rollouts read model (``GET /v1/rollouts``) counts them all ``succeeded``; a warm-up
round runs first.

Theirs (`bench/peer_agentlightning.py`, in a virtual environment of its own with ``agentlightning==0.3.*``,
created under .agl/cache on first run and never a project dependency): the same operations through its
``LightningStoreServer`` + ``LightningStoreClient`` on loopback (``peer_rps``) and on its in-memory store called
in-process (``peer_inproc_rps``). It runs before our stack starts, so neither competes with the other for the CPU.

Our round's CPU time is split by service (`bench/_service_cpu.py`: each process below this one, PostgreSQL's
backends by their client's application name) and printed as milliseconds per rollout, with the cores busy with
ours and with anything on the machine: the throughput is the cores divided by that sum.

Then, with the runners stopped, it waits until every projection has caught up (``GET /v1/projections``: the
background ones fall behind while the runners keep the cores busy) and prints how long that took and the CPU it
cost per rollout. Then publish-to-visible latency: rollouts are enqueued through the API at a steady
``--visible-rate`` per second (open loop, batches of ``--visible-batch``) for ``--visible-seconds``, and
``GET /v1/rollouts?rollout_id=...`` is polled until the read model shows each one; p99 of send-to-seen. The
probe's requests go through aiohttp: it runs on the cores it measures, and httpx cost it up to 0.6 of a core.

    .venv/bin/python bench/lifecycle.py [--rollouts 3000] [--runners 2 --slots 256] [--no-peer] [--broker tansu]

Last line: ``ours_rps=<n> peer_rps=<n> peer_inproc_rps=<n> ratio=<ours/peer> p99_visible_ms=<ms>
cpu_ms_per_rollout=<ms>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agl.stack.state import read_state
from bench import _service_cpu as service_cpu
from bench._stack import running_stack
from producers.client import AsyncClient
from tests.compat.agl_venv import peer_python

if TYPE_CHECKING:
    pass

REPO = Path(__file__).resolve().parents[1]
AGENT = "bench.lifecycle_agent:agent"
#: Rollout ids per read of the latency probe: keeps the query string well under the server's line limit.
IDS_PER_READ = 200


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 3,000, as the peer's in-process round: a round of 1,000 (1.4 s) left its ramp and tail a tenth of the cores
    # idle, and ended before the background projections had done 0.9 ms of each rollout's 3.4 ms (counted as
    # "deferred" after it); at 3,000 that is 0.3 ms.
    parser.add_argument("--rollouts", type=int, default=3000, help="rollouts of our measured round")
    parser.add_argument("--warmup", type=int, default=100, help="rollouts run before each measured round")
    parser.add_argument("--runners", type=int, default=2, help="runner processes (ours and the peer's)")
    # 256, for both sides: ours batches more per request and per transaction with more attempts in flight (three
    # alternating pairs on 2 cores, 64 -> 256 slots: 802 -> 892, 684 -> 811, 731 -> 887 rollouts/s); the peer's
    # server does not (client-server 89 and 91/s at 64, 85 and 87/s at 256).
    parser.add_argument("--slots", type=int, default=256, help="attempts each runner runs at once (both sides)")
    parser.add_argument("--enqueue-batch", type=int, default=100, help="rollouts per enqueue request")
    parser.add_argument("--peer-rollouts", type=int, default=500, help="rollouts through the peer's server")
    parser.add_argument("--peer-inproc-rollouts", type=int, default=3000, help="rollouts through its in-process store")
    parser.add_argument("--no-peer", action="store_true", help="skip Agent Lightning (its figures print as 0)")
    parser.add_argument("--visible-rate", type=int, default=1000, help="rollouts/s enqueued for the latency probe")
    parser.add_argument("--visible-seconds", type=float, default=5.0)
    parser.add_argument("--visible-batch", type=int, default=10, help="rollouts per enqueue in the latency probe")
    parser.add_argument("--broker", choices=["auto", "kafka", "tansu"], default="auto")
    return parser.parse_args()


# -- the peer -----------------------------------------------------------------------------------------------------
def run_peer(args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        str(peer_python()), str(REPO / "bench" / "peer_agentlightning.py"),
        "--rollouts", str(args.peer_rollouts), "--inproc-rollouts", str(args.peer_inproc_rollouts),
        "--warmup", str(args.warmup), "--runners", str(args.runners), "--slots", str(args.slots),
        "--enqueue-batch", str(args.enqueue_batch),
    ]  # fmt: skip
    # Its stderr (server logs, aiohttp's complaints about sessions left to the garbage collector) is noise here.
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the Agent Lightning side failed (exit {done.returncode}); run {' '.join(argv)}")
    figures: dict[str, Any] = json.loads(lines[-1])
    print(f"peer: client-server {figures['peer_rps']:,.0f}/s, in-process {figures['peer_inproc_rps']:,.0f}/s",
          flush=True)  # fmt: skip
    return figures


# -- our stack ----------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def runners(api_url: str, count: int, slots: int, http: httpx.AsyncClient) -> AsyncIterator[None]:
    """``count`` `agl runner` processes, registered before this yields; drained (SIGTERM) on exit."""
    tag = uuid.uuid4().hex[:6]
    ids = [f"bench-{tag}-{i}" for i in range(count)]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agl",
            "runner",
            "--agent",
            AGENT,
            "--slots",
            str(slots),
            "--api",
            api_url,
            "--worker-id",
            worker_id,
            cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL,
        )
        for worker_id in ids
    ]
    try:
        deadline = time.monotonic() + 120
        while True:
            answer = (await http.get("/v1/workers", params={"limit": 1000, "wait_ms": 0})).json()
            if set(ids) <= {w["worker_id"] for w in answer.get("items", [])}:
                break
            if time.monotonic() > deadline or any(p.returncode is not None for p in procs):
                raise SystemExit("the runners did not register")
            await asyncio.sleep(0.2)
        yield
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*(proc.wait() for proc in procs))


async def count(http: httpx.AsyncClient, status: str) -> int:
    answer = await http.get("/v1/rollouts", params={"status": status, "limit": 1, "wait_ms": 0})
    answer.raise_for_status()
    total: int = answer.json()["total"]
    return total


async def rollouts_per_second(client: AsyncClient, http: httpx.AsyncClient, n: int, batch: int, tag: str) -> float:
    """Enqueue ``n`` rollouts; their number per second until the read model counts them all succeeded."""
    before = await count(http, "succeeded")
    t0 = time.perf_counter()

    async def enqueue() -> None:
        for start in range(0, n, batch):
            items = [
                {"input": {"question": f"{tag}-{i}"}, "mode": "train"} for i in range(start, min(n, start + batch))
            ]
            await client.enqueue_rollouts(items)

    enqueuing = asyncio.create_task(enqueue())
    while await count(http, "succeeded") < before + n:
        if enqueuing.done() and enqueuing.exception():
            await enqueuing
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - t0
    await enqueuing
    return n / elapsed


async def visible_latencies(url: str, args: argparse.Namespace) -> list[float]:
    """Send-to-visible seconds of rollouts enqueued at a steady rate (open loop: a slow answer delays no send).

    The probe's own HTTP goes through aiohttp, not httpx: it shares the two cores with the stack it measures, and
    httpx's connection pool cost grows with the requests in flight (an open loop against a busy API has many),
    so with httpx the probe itself took 0.4-0.6 of a core at 1,000 rollouts/s and made the latency it measured.
    The requests are the SDK's: ``POST /v1/rollouts`` with an Idempotency-Key, ``GET /v1/rollouts?rollout_id=``.
    """
    interval = args.visible_batch / args.visible_rate
    batches = max(1, round(args.visible_rate * args.visible_seconds / args.visible_batch))
    tag = uuid.uuid4().hex[:6]
    sent: dict[str, float] = {}
    latencies: list[float] = []
    accepted: list[float] = []  # send-to-202 of each enqueue: tells the API's share of the latency
    timeout = aiohttp.ClientTimeout(total=30)
    # No cap on connections: an open loop keeps sending while earlier answers are pending.
    session = aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=0), timeout=timeout)

    async def send(k: int) -> None:
        ids = [f"vis-{tag}-{k}-{j}" for j in range(args.visible_batch)]
        body = [{"rollout_id": i, "input": {"probe": k}, "mode": "train"} for i in ids]
        now = time.perf_counter()
        sent.update(dict.fromkeys(ids, now))
        async with session.post("/v1/rollouts", json=body, headers={"Idempotency-Key": f"probe-{tag}-{k}"}) as answer:
            if answer.status != 202:
                raise SystemExit(f"enqueue answered {answer.status}: {await answer.text()}")
            await answer.read()
        accepted.append(time.perf_counter() - now)

    async def read(ids: list[str]) -> None:
        params = [("rollout_id", i) for i in ids] + [("limit", str(len(ids))), ("wait_ms", "0")]
        async with session.get("/v1/rollouts", params=params) as answer:
            answer.raise_for_status()
            items = orjson.loads(await answer.read())["items"]
        seen = time.perf_counter()
        visible = [item["rollout_id"] for item in items if item["enqueued"]]
        latencies.extend(seen - sent.pop(i) for i in visible if i in sent)

    async def probe(stop: asyncio.Event) -> None:
        # One read per round, of the oldest pending ids (the read model shows rollouts in about enqueue order):
        # reading every pending id when a backlog builds would load the API with the probe itself.
        while not (stop.is_set() and not sent):
            if sent:
                await read(list(itertools.islice(sent, IDS_PER_READ)))
            await asyncio.sleep(0.005)

    async with session:
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(stop))
        start = time.perf_counter()
        sends = []
        for k in range(batches):
            await asyncio.sleep(max(0.0, start + k * interval - time.perf_counter()))
            sends.append(asyncio.create_task(send(k)))
        await asyncio.gather(*sends)
        stop.set()
        await asyncio.wait_for(prober, 120)
    cuts = statistics.quantiles(accepted, n=100) if len(accepted) > 1 else accepted * 99
    print(f"visible: enqueue answered in p50 {cuts[49] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms", flush=True)
    return latencies


async def measure_ours(args: argparse.Namespace, workdir: Path) -> tuple[float, list[float], float]:
    async with (
        running_stack(args.broker, workdir) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        AsyncClient(url) as client,
    ):
        async with runners(url, args.runners, args.slots, http):
            await rollouts_per_second(client, http, args.warmup, args.enqueue_batch, "warmup")
            state = read_state(workdir)
            database_url = state.database_url if state is not None else None
            before = await asyncio.to_thread(service_cpu.sample, database_url)
            rps = await rollouts_per_second(client, http, args.rollouts, args.enqueue_batch, "bench")
            after = await asyncio.to_thread(service_cpu.sample, database_url)
            failed = await count(http, "failed")
            print(f"ours: {args.rollouts} rollouts at {rps:,.0f}/s ({failed} failed)", flush=True)
            lines, cpu_ms = service_cpu.report(before, after, args.rollouts, "rollout")
            print("\n".join(lines), flush=True)
        # The background projections (archive, spans, triplets...) linger and fall behind while the runners keep
        # the cores busy: the latency probe starts once they have caught up, else it measures their backlog.
        settle_s = await caught_up(http)
        settled = await asyncio.to_thread(service_cpu.sample, database_url)
        deferred_ms = sum(service_cpu.per_item_ms(after, settled, args.rollouts).values())
        print(
            f"deferred: every projection caught up, seen {settle_s:.1f} s after the runners stopped (status reads "
            f"included); {deferred_ms:.3f} ms per rollout more (their backlog, and whatever ran idle meanwhile)",
            flush=True,
        )
        probe_before = await asyncio.to_thread(service_cpu.sample, database_url)
        latencies = await visible_latencies(url, args)
        probe_after = await asyncio.to_thread(service_cpu.sample, database_url)
        lines, _ = service_cpu.report(probe_before, probe_after, len(latencies), "rollout of the latency probe")
        print("\n".join(lines), flush=True)
    return rps, latencies, cpu_ms


async def caught_up(http: httpx.AsyncClient, timeout_s: float = 600.0) -> float:
    """Seconds until ``GET /v1/projections`` shows every projection's lag at 0 (its first answer takes a second or
    two: it asks the broker for the high watermarks)."""
    start = time.monotonic()
    while True:
        answer = await http.get("/v1/projections")
        answer.raise_for_status()
        behind = {s["name"]: s["lag"] for s in answer.json() if s["lag"]}
        if not behind:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"projections still behind {timeout_s:.0f} s after the round: {behind}")
        await asyncio.sleep(0.25)


def main() -> None:
    args = parse_args()
    peer = {"peer_rps": 0.0, "peer_inproc_rps": 0.0} if args.no_peer else run_peer(args)
    workdir = Path(tempfile.mkdtemp(prefix="agl-bench-"))
    try:
        rps, latencies, cpu_ms = asyncio.run(measure_ours(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    print(
        f"visible: {len(latencies)} rollouts at {args.visible_rate}/s: p50 {cuts[49] * 1000:.0f} ms, "
        f"p99 {cuts[98] * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    ratio = rps / peer["peer_rps"] if peer["peer_rps"] else 0.0
    print(
        f"ours_rps={rps:.0f} peer_rps={peer['peer_rps']:.0f} peer_inproc_rps={peer['peer_inproc_rps']:.0f} "
        f"ratio={ratio:.1f} p99_visible_ms={cuts[98] * 1000:.0f} cpu_ms_per_rollout={cpu_ms:.2f}"
    )


if __name__ == "__main__":
    main()
