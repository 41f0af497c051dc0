"""What a running stack writes to its data directory: a lock held for its lifetime and its addresses."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agl.errors import AlreadyRunningError, ConfigError, DataDirError

if TYPE_CHECKING:
    from agl.config import Settings

LOCK_FILE = "agl.lock"
STATE_FILE = "stack.json"


@dataclass
class StackState:
    pid: int
    broker: str
    bootstrap: str
    database_url: str
    api_url: str | None
    durable_log: bool
    started_at: str
    components: dict[str, int] = field(default_factory=dict)
    llm_endpoint: str | None = None
    llm_model: str | None = None

    def describe(self) -> str:
        lines = [
            f"broker    {self.broker:<9} {self.bootstrap}",
            f"postgres            {self.database_url}",
        ]
        if self.api_url:
            lines.append(f"api                 {self.api_url}")
        if self.llm_endpoint:
            lines.append(f"llm                 {self.llm_endpoint}  ({self.llm_model})")
        return "\n".join(lines)


def ensure_data_dir(path: Path) -> None:
    """Create the data directory and prove it is writable, or say clearly why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise DataDirError(f"data directory {path} is not usable: {e.strerror or e}") from e


def read_state(data_dir: Path) -> StackState | None:
    try:
        raw: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
        return StackState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def write_state(data_dir: Path, state: StackState) -> None:
    tmp = data_dir / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(data_dir / STATE_FILE)


def clear_state(data_dir: Path) -> None:
    (data_dir / STATE_FILE).unlink(missing_ok=True)


class StackLock:
    """An exclusive ``flock`` on ``<data_dir>/agl.lock``, held as long as a stack runs there.

    The kernel drops the lock when the holder dies, however it dies, so a stale lock cannot block a restart.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        assert self._file is None, "Did you acquire the lock twice?"
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            running = read_state(self.path.parent)
            where = f" (pid {running.pid})\n{running.describe()}" if running else ""
            raise AlreadyRunningError(f"a stack already runs on {self.path.parent}{where}") from None
        self._file = handle

    def release(self) -> None:
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def held_by_someone(self) -> bool:
        """True while a stack holds the lock (probing never blocks)."""
        try:
            with self.path.open("a+") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(handle, fcntl.LOCK_UN)
                return False
        except OSError:
            return False


def with_running_stack(settings: Settings, *, need: tuple[str, ...] = ("kafka_bootstrap", "database_url")) -> Settings:
    """``settings`` with the broker and database of the stack running on its data directory filled in.

    Explicit ``AGL_KAFKA_BOOTSTRAP`` / ``AGL_DATABASE_URL`` win; so a second terminal needs no settings to talk to
    the stack `agl up` started. Raises ConfigError naming what is missing when nothing provides it.
    """
    state = read_state(settings.data_dir) if StackLock(settings.data_dir).held_by_someone() else None
    updates: dict[str, str] = {}
    if state is not None:
        if not settings.kafka_bootstrap:
            updates["kafka_bootstrap"] = state.bootstrap
        if not settings.database_url:
            updates["database_url"] = state.database_url
    resolved = settings.model_copy(update=updates)
    missing = [f"AGL_{name.upper()}" for name in need if not getattr(resolved, name)]
    if missing:
        raise ConfigError(
            f"no stack runs on {settings.data_dir} and {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'}"
            " not set; start one with `agl up` or set them"
        )
    return resolved
