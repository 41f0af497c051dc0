"""Read-your-writes latency: POST /v1/rollouts, then GET /v1/rollouts/{id}?after=<position>, at a steady rate.

Runs the stack `agl up` runs (API, the rollouts and other projections, the watchdog; Apache Kafka or Tansu and
PostgreSQL on free ports in a temporary directory, unless AGL_KAFKA_BOOTSTRAP / AGL_DATABASE_URL point elsewhere),
then, for each rate of ``--rates`` (commands per second, open loop: command i starts at i / rate whatever the
earlier ones are doing), enqueues one rollout per command and reads it back with the command's position token,
for ``--seconds`` after a warm-up of ``--warmup`` seconds at the same rate. Reported per rate, p50 and p99 of:

- ``post``: the POST alone (the baseline: what a client pays without reading its write back);
- ``read``: the GET ?after= alone, i.e. how long the projection took to apply and the read to notice;
- ``total``: POST then GET, the read-your-writes round trip.

The read wakes on the NOTIFY the projection sends after each apply (``projections/applied.py``). ``--no-read``
runs the POSTs alone: the baseline of what the command side costs at that rate, reads apart. Requests go over
keep-alive connections spoken by hand (see ``Connections``), so the load generator is not what is measured.

    .venv/bin/python bench/read_your_writes.py [--rates 100 300] [--seconds 10] [--no-read] [--broker tansu]

Last line: ``p99_100_ms=<total p99 at the first rate> p99_300_ms=<total p99 at the second rate>``
(named after the rates actually run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import running_stack

if TYPE_CHECKING:
    pass

REPO = Path(__file__).resolve().parents[1]
#: A read waits at most this long for ?after= (a slower one is counted as failed).
WAIT_MS = 10_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 300], help="commands per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per rate, first")
    parser.add_argument("--broker", choices=["auto", "kafka", "tansu"], default="auto")
    parser.add_argument("--no-read", action="store_true", help="POST only: what the stack costs without reads")
    return parser.parse_args()


@dataclass
class Samples:
    post: list[float] = field(default_factory=list)
    read: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    failed: int = 0
    errors: set[str] = field(default_factory=set)


class Connections:
    """Keep-alive HTTP/1.1 connections to the API, spoken by hand over asyncio streams.

    httpx spends about a millisecond of CPU per request and scans its pool on every one: at a few hundred requests
    per second on two cores the figures would measure the load generator's backlog, not the server.
    """

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        while self._idle:
            # An idle connection may have been closed by the server (uvicorn's keep-alive timeout): then a new one.
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                return await self._exchange(self._idle.pop(), method, target, body)
        return await self._exchange(await asyncio.open_connection(self.host, self.port), method, target, body)

    async def _exchange(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], method: str, target: str, body: bytes
    ) -> tuple[int, bytes]:
        reader, writer = conn
        try:
            head = f"{method} {target} HTTP/1.1\r\nHost: api\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + (b"Content-Type: application/json\r\n\r\n" if body else b"\r\n") + body)
            status = int((await reader.readuntil(b"\r\n")).split()[1])  # IncompleteReadError: closed
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            payload = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.append(conn)
        return status, payload

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()


def expect(wanted: int, status: int, body: bytes) -> None:
    if status != wanted:
        raise RuntimeError(f"answered {status}: {body[:200]!r}")


async def command(client: Connections, n: int, samples: Samples | None, *, read_back: bool = True) -> None:
    """One command and its read-back; timings go to ``samples`` (none: a warm-up command)."""
    t0 = time.perf_counter()
    try:
        status, body = await client.request("POST", "/v1/rollouts", orjson.dumps({"input": {"n": n}}))
        t1 = time.perf_counter()
        expect(202, status, body)
        if not read_back:
            if samples is not None:
                samples.post.append((t1 - t0) * 1000)
            return
        answer = orjson.loads(body)
        query = urllib.parse.urlencode({"after": answer["position"], "wait_ms": WAIT_MS})
        status, body = await client.request("GET", f"/v1/rollouts/{answer['rollouts'][0]['rollout_id']}?{query}")
        t2 = time.perf_counter()
        expect(200, status, body)
    except (OSError, RuntimeError, asyncio.IncompleteReadError) as e:
        # An overloaded stack refuses or drops some requests: counted, so the figures say how many.
        if samples is not None:
            samples.failed += 1
            samples.errors.add(str(e)[:120])
        return
    if samples is None:
        return
    samples.post.append((t1 - t0) * 1000)
    samples.read.append((t2 - t1) * 1000)
    samples.total.append((t2 - t0) * 1000)


async def steady(
    client: Connections, rate: int, seconds: float, samples: Samples | None, *, read_back: bool = True
) -> float:
    """Start ``rate * seconds`` commands on schedule; return how late the latest one started (ms)."""
    count = int(rate * seconds)
    tasks = []
    start = time.perf_counter()
    late = 0.0
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        late = max(late, -delay * 1000)
        tasks.append(asyncio.create_task(command(client, i, samples, read_back=read_back)))
    await asyncio.gather(*tasks)
    return late


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else float("nan")


async def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="agl-bench-ryw-"))
    p99: dict[int, float] = {}
    try:
        async with running_stack(args.broker, workdir) as url:
            client = Connections(url)
            try:
                for rate in args.rates:
                    await steady(client, rate, args.warmup, None, read_back=not args.no_read)
                    samples = Samples()
                    late = await steady(client, rate, args.seconds, samples, read_back=not args.no_read)
                    line = [f"rate {rate}/s: {len(samples.total)} ok, {samples.failed} failed;"]
                    for name in ("post", "read", "total"):
                        values = getattr(samples, name)
                        line.append(f"{name} p50 {pct(values, 50):.1f} p99 {pct(values, 99):.1f} ms;")
                    print(" ".join(line), f"scheduler at most {late:.0f} ms late", flush=True)
                    if samples.errors:
                        print("  errors:", "; ".join(sorted(samples.errors)[:5]), flush=True)
                    p99[rate] = pct(samples.total if not args.no_read else samples.post, 99)
            finally:
                client.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(" ".join(f"p99_{rate}_ms={value:.1f}" for rate, value in p99.items()))


if __name__ == "__main__":
    asyncio.run(main())
