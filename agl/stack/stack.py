"""The embedded stack as one supervised process tree: broker, PostgreSQL, then the services that use them.

Start order: data directory and lock -> ports -> PostgreSQL and broker (concurrently) -> migrations ->
topics -> log-epoch check -> services (API, later the workers). Stop order is the reverse: services first,
so they can drain and commit, then broker and PostgreSQL. Every child also gets a parent-death signal, so
even a SIGKILL of the supervisor leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg

from agl.app_name import service_application_name
from agl.errors import ConfigError, StackError
from agl.stack._process import ManagedProcess, require_free_port
from agl.stack.attached_workers import AttachedWorkers
from agl.stack.brokers import ApacheKafka, BrokerInfo, Tansu, java_available
from agl.stack.llm import EmbeddedLLM, choose_port, publish_default_resources, remember_port
from agl.stack.log_epoch import (
    EpochOutcome,
    ensure_log_epoch,
    read_log_epoch,
    reconcile_log_epoch,
    settle_archive_at_stop,
    write_log_epoch,
)
from agl.stack.migrations import migrate_stack
from agl.stack.postgres import EmbeddedPostgres
from agl.stack.projection_processes import (
    projection_processes,
    projection_service_name,
    runs_projection,
)
from agl.stack.restore import RestoreReport, restore_from_archive
from agl.stack.state import StackLock, StackState, clear_state, ensure_data_dir, write_state
from producers.admin import ensure_topics
from producers.auth.bootstrap import ensure_local_admin_key
from projections.migrations import migrate_core
from schemas.topics import INTERNAL_TOPICS, META, TOPICS

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from agl.config import BrokerChoice, Settings

log = logging.getLogger(__name__)

TANSU_WARNING = "warning: Tansu keeps its whole history in memory: stopping the stack loses every topic and record"
#: A service that crashes more often than this within a minute is not restarted again.
MAX_RESTARTS_PER_MINUTE = 5


def choose_broker(settings: Settings, requested: BrokerChoice | None = None) -> BrokerChoice:
    """Resolve ``auto`` and check the choice against the settings."""
    choice = requested or settings.broker
    if settings.kafka_bootstrap:
        if choice in ("kafka", "tansu"):
            raise ConfigError(f"--broker {choice} asks for an embedded broker but AGL_KAFKA_BOOTSTRAP is set")
        return "external"
    if choice == "external":
        raise ConfigError("--broker external needs AGL_KAFKA_BOOTSTRAP=host:port")
    if choice == "auto":
        return "kafka" if java_available() else "tansu"
    if choice == "kafka" and not java_available():
        raise ConfigError("--broker kafka needs java and mvn on PATH; install them or use --broker tansu")
    return choice


@dataclass
class ServiceSpec:
    """A long-running child the supervisor keeps alive (the API, a projection worker...)."""

    name: str
    argv: Sequence[str]
    #: A URL answering 200 once the service is ready, if it has one.
    ready_url: str | None = None
    restarts: list[float] = field(default_factory=list)


class Stack:
    """Starts, watches and stops the embedded stack described by ``settings``."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker: BrokerChoice | None = None,
        accept_log_reset: bool = False,
        agents: Path | bool = False,
    ) -> None:
        self.settings = settings
        #: ``agl up --agents [CONFIG]``: the agent pools to run as one more supervised child (True: the shipped pools).
        self.agents = agents
        self.broker_choice = choose_broker(settings, broker)
        self.accept_log_reset = accept_log_reset
        self.data_dir = settings.data_dir
        self._lock = StackLock(self.data_dir)
        self._broker: ApacheKafka | Tansu | None = None
        self._postgres: EmbeddedPostgres | None = None
        self._llm: EmbeddedLLM | None = None
        #: Resolved before anything starts: an external endpoint without a model name is a ConfigError.
        self.llm_model = settings.resolved_llm_model()
        self.llm_endpoint: str | None = settings.llm_endpoint
        self.log_epoch: str | None = None
        self._services: dict[str, tuple[ServiceSpec, ManagedProcess]] = {}
        self.broker_info: BrokerInfo | None = None
        #: The database's address for other machines and the state file (TCP for the embedded server).
        self.database_url: str | None = None
        #: The address this stack and its services use: the embedded server's Unix-domain socket when it has one.
        self.local_database_url: str | None = None
        self.api_url: str | None = None
        self.epoch_outcome: EpochOutcome | None = None
        self.restored: RestoreReport | None = None
        #: workers of the projections attached with `agl projections attach`, picked up while the stack runs
        self.attached = AttachedWorkers(self)

    # -- start -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        ensure_data_dir(self.data_dir)
        self._lock.acquire()
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    def _check_ports(self) -> None:
        s = self.settings
        if self.broker_choice == "kafka":
            require_free_port(s.kafka_port, "kafka", "AGL_KAFKA_PORT")
            require_free_port(s.kafka_controller_port, "kafka controller", "AGL_KAFKA_CONTROLLER_PORT")
        elif self.broker_choice == "tansu":
            require_free_port(s.kafka_port, "tansu", "AGL_KAFKA_PORT")
        if s.database_url is None:
            require_free_port(s.postgres_port, "postgres", "AGL_POSTGRES_PORT")
        require_free_port(s.api_port, "api", "AGL_API_PORT", host=s.api_host)

    async def _start(self) -> None:
        s = self.settings
        self._check_ports()
        if self.broker_choice == "kafka":
            self._broker = ApacheKafka(
                data_dir=self.data_dir / "kafka",
                libs_dir=s.resolved_kafka_libs_dir(),
                port=s.kafka_port,
                controller_port=s.kafka_controller_port,
                heap=s.kafka_heap,
                jvm_options=s.kafka_jvm_options,
            )
        elif self.broker_choice == "tansu":
            print(TANSU_WARNING, file=sys.stderr)
            self._broker = Tansu(data_dir=self.data_dir / "tansu", port=s.kafka_port)
        if s.database_url is None:
            self._postgres = EmbeddedPostgres(data_dir=self.data_dir / "postgres" / "data", port=s.postgres_port)
        if s.llm_endpoint is None:
            llm_port = choose_port(s)
            remember_port(self.data_dir, llm_port)
            self._llm = EmbeddedLLM(
                port=llm_port,
                log_path=self.data_dir / "logs" / "llm.log",
                model=self.llm_model,
                replicas=s.llm_replicas,
                avoid_ports=s.stack_ports(),
            )
            self.llm_endpoint = self._llm.endpoint
        starts = [c.start(s.startup_timeout_s) for c in self._infra() if c is not None]
        # They start at once; the first failure is raised as itself (not an ExceptionGroup) so the CLI can
        # print it on one line, and stop() cleans up whichever did start.
        for outcome in await asyncio.gather(*starts, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        self.broker_info = (
            self._broker.info
            if self._broker is not None
            else BrokerInfo("external", s.kafka_bootstrap or "", durable=True, supports_idempotence=True)
        )
        self.database_url = s.database_url or (self._postgres.url() if self._postgres else None)
        self.local_database_url = s.database_url or (self._postgres.local_url() if self._postgres else None)
        assert self.database_url is not None and self.local_database_url is not None
        await self._prepare_data(self.broker_info.bootstrap, self.local_database_url)
        self.api_url = f"http://{s.api_host}:{s.api_port}"
        await self.start_service(
            ServiceSpec("api", [sys.executable, "-m", "agl", "api"], ready_url=f"{self.api_url}/healthz")
        )
        for names in projection_processes(self.settings.projection_processes):
            argv = [sys.executable, "-m", "agl", "projections", "run", *names]
            await self.start_service(ServiceSpec(projection_service_name(names), argv))
        await self.attached.sync(force=True)
        await self.start_service(ServiceSpec("watchdog", [sys.executable, "-m", "agl", "watchdog"]))
        await self.start_service(
            ServiceSpec("knowledge-indexer", [sys.executable, "-m", "agl", "knowledge", "indexer"])
        )
        if self.settings.memory_episodes == "on":  # opt-in: each finished rollout then costs an embedding
            episodes = [sys.executable, "-m", "agl", "knowledge", "episodes"]
            await self.start_service(ServiceSpec("memory-episodes", episodes))
        await self._publish_default_llm()
        if self.agents is not False:
            # After the LLM is published: the agents call it through the proxy from their first task.
            config = [] if self.agents is True else ["--config", str(self.agents)]
            argv = [sys.executable, "-m", "agl", "agents", "up", "--api", self.api_url, "--drain-grace", "10", *config]
            await self.start_service(ServiceSpec("agents", argv))
        self._write_state()

    def _infra(self) -> tuple[ApacheKafka | Tansu | EmbeddedPostgres | EmbeddedLLM | None, ...]:
        """The components services depend on: started before them, stopped after them."""
        return (self._broker, self._postgres, self._llm)

    async def _publish_default_llm(self) -> None:
        """Make the LLM the ``default`` resources, unless that is already the latest version (see llm.py)."""
        assert self.api_url is not None and self.local_database_url is not None and self.llm_endpoint is not None
        version = await publish_default_resources(
            api_url=self.api_url, database_url=self.local_database_url, data_dir=self.data_dir,
            endpoint=self.llm_endpoint, model=self.llm_model, api_key_ref=self.settings.llm_api_key_ref,
            log_epoch=self.log_epoch,
        )  # fmt: skip
        if version is not None:
            log.info("published %s at %s as resources 'default' version %d", self.llm_model, self.llm_endpoint, version)

    async def _prepare_data(self, bootstrap: str, database_url: str) -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await migrate_core(conn)
            await migrate_stack(conn)
            prefix = self.settings.topic_prefix
            # The local user's admin key, saved as <data_dir>/api-key for the CLI, the SDK and the runners.
            await ensure_local_admin_key(conn, self.data_dir, topic_prefix=prefix)
            await ensure_topics(bootstrap, (*TOPICS, *INTERNAL_TOPICS), prefix=prefix)
            meta_topic = META.full_name(prefix)
            if await read_log_epoch(bootstrap, meta_topic) is None:
                # A log with no epoch is new, or was reset (Tansu forgets everything): restore it if we can.
                event_topics = [t.full_name(prefix) for t in TOPICS if t is not META]
                self.restored = await restore_from_archive(
                    conn, bootstrap, event_topics, accept_loss=self.accept_log_reset
                )
                if self.restored is not None:
                    await write_log_epoch(bootstrap, meta_topic, self.restored.epoch)
            epoch = await ensure_log_epoch(bootstrap, meta_topic)
            self.log_epoch = epoch
            self.epoch_outcome = await reconcile_log_epoch(conn, epoch, accept_reset=self.accept_log_reset)

    def child_env(self, spec: ServiceSpec) -> dict[str, str]:
        """The environment of service ``spec``: the addresses of this stack's broker and database, and the
        application name its connections show PostgreSQL (the one it has when run by hand, not ``agl-up``)."""
        assert self.broker_info is not None and self.local_database_url is not None
        env = dict(os.environ)
        env["PGAPPNAME"] = service_application_name(spec.argv, spec.name)
        env.update(
            AGL_KAFKA_BOOTSTRAP=self.broker_info.bootstrap,
            AGL_DATABASE_URL=self.local_database_url,
            AGL_DATA_DIR=str(self.data_dir),
            AGL_API_HOST=self.settings.api_host,
            AGL_API_PORT=str(self.settings.api_port),
            AGL_TOPIC_PREFIX=self.settings.topic_prefix,
            AGL_BROKER_KIND=self.broker_info.kind,
        )
        if self.llm_endpoint is not None:
            # What workers call when a rollout names no resources; the published `default` says the same.
            env.update(AGL_LLM_ENDPOINT=self.llm_endpoint, AGL_LLM_MODEL=self.llm_model)
        return env

    async def start_service(self, spec: ServiceSpec) -> None:
        proc = ManagedProcess(
            spec.name, spec.argv, log_path=self.data_dir / "logs" / f"{spec.name}.log", env=self.child_env(spec)
        )
        proc.start()
        self._services[spec.name] = (spec, proc)
        if spec.ready_url:
            await _wait_http_ready(proc, spec.ready_url, self.settings.startup_timeout_s)

    async def supervise(self, spec: ServiceSpec) -> None:
        """Start a service while the stack runs (an attached projection) and record it in the state file."""
        await self.start_service(spec)
        self._write_state()

    async def stop_service(self, name: str) -> None:
        """Stop a service while the stack runs (a detached projection) and forget it."""
        entry = self._services.pop(name, None)
        if entry is not None:
            await entry[1].stop_async()
            self._write_state()

    def _write_state(self) -> None:
        assert self.broker_info is not None and self.database_url is not None
        components = {name: proc.pid for name, (_, proc) in self._services.items() if proc.pid}
        for name, component in (("broker", self._broker), ("postgres", self._postgres), ("llm", self._llm)):
            if component is not None and component.process is not None and component.process.pid:
                components[name] = component.process.pid
        write_state(
            self.data_dir,
            StackState(
                pid=os.getpid(),
                broker=self.broker_info.kind,
                bootstrap=self.broker_info.bootstrap,
                database_url=self.database_url,
                api_url=self.api_url,
                durable_log=self.broker_info.durable,
                started_at=datetime.now(UTC).isoformat(),
                components=components,
                llm_endpoint=self.llm_endpoint,
                llm_model=self.llm_model,
            ),
        )

    # -- watch ---------------------------------------------------------------------------------------------
    async def watch(self, stop: asyncio.Event, poll_s: float = 0.5) -> None:
        """Return when ``stop`` is set; restart crashed services; raise if the broker, PostgreSQL or the LLM dies."""
        while not stop.is_set():
            for component in self._infra():
                proc = None if component is None else component.process
                if proc is not None and not proc.running():
                    raise StackError(
                        f"{proc.name} exited unexpectedly with code {proc.returncode}; see {proc.log_path}"
                    )
            for name, (spec, proc) in list(self._services.items()):
                if not proc.running():
                    await self._restart(name, spec, proc)
            await self.attached.sync()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)

    async def _restart(self, name: str, spec: ServiceSpec, proc: ManagedProcess) -> None:
        now = time.monotonic()
        spec.restarts = [t for t in spec.restarts if now - t < 60] + [now]
        if len(spec.restarts) > MAX_RESTARTS_PER_MINUTE:
            if await self.attached.give_up(name, proc):
                return  # a user's projection that crash-loops must not stop the stack
            raise StackError(
                f"{name} crashed {len(spec.restarts)} times within a minute (last exit code "
                f"{proc.returncode}); see {proc.log_path}"
            )
        print(f"{name} exited with code {proc.returncode}; restarting", file=sys.stderr)
        await self.start_service(spec)
        self._write_state()

    # -- stop ----------------------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop services, then broker and PostgreSQL. Safe to call twice and after a failed start."""
        services = list(self._services.values())
        self._services.clear()
        # The process that runs the archive projection (alone, or with others that only write PostgreSQL).
        archive = next((proc for spec, proc in services if runs_projection(spec.argv, "archive")), None)
        if (
            archive is not None
            and self.broker_info is not None
            and not self.broker_info.durable
            and self.local_database_url
        ):
            # This broker forgets its log: stop the writers, then let the archive store every record first.
            await asyncio.gather(*(proc.stop_async() for _, proc in services if proc is not archive))
            warning = await settle_archive_at_stop(
                self.local_database_url, self.broker_info.bootstrap,
                [t.full_name(self.settings.topic_prefix) for t in TOPICS if t is not META],
                archive_running=archive.running,
            )  # fmt: skip
            if warning:
                print(warning, file=sys.stderr)
        await asyncio.gather(*(proc.stop_async() for _, proc in services))
        infra = [c for c in self._infra() if c is not None]
        await asyncio.gather(*(c.stop() for c in infra))
        clear_state(self.data_dir)
        self._lock.release()


async def _wait_http_ready(proc: ManagedProcess, url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not proc.running():
                raise StackError(
                    f"{proc.name} exited with code {proc.returncode} while starting; see {proc.log_path}:\n"
                    f"{proc.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise StackError(f"{proc.name} was not ready at {url} within {timeout:.0f}s; see {proc.log_path}")
