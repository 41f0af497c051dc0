"""A child process that dies with its parent and stops politely, then firmly."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from agl.errors import PortInUseError, StackError, StartupTimeoutError

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> None:
    """Ask the kernel to signal this child when the process that started it dies.

    This is what keeps `agl up` from leaving a broker or PostgreSQL behind when it is killed with SIGKILL,
    which no Python handler can catch. It runs after the uid switch (the kernel clears the setting on
    credential changes), so it also holds for PostgreSQL running as its own user.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)


class ManagedProcess:
    """One child process with a log file.

    ``start()`` launches it; ``stop()`` sends ``stop_signal``, waits ``stop_timeout`` seconds, then kills it.
    ``stop()`` is safe to call twice and on a process that already exited.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        death_signal: int = signal.SIGTERM,
        stop_timeout: float = 20.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.death_signal = death_signal
        self.stop_timeout = stop_timeout
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        assert self._popen is None, f"Did you call start twice on {self.name}?"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        death_signal = self.death_signal
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs["user"] = self.user
            kwargs["group"] = self.user
            kwargs["extra_groups"] = []
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                # Its own session: a Ctrl-C in the terminal reaches only the supervisor, which stops the
                # children in order (API and workers before the broker and PostgreSQL).
                start_new_session=True,
                preexec_fn=lambda: _die_with_parent(death_signal),  # noqa: PLW1509 - no threads run user code here
                **kwargs,
            )

    def stop(self) -> int | None:
        """Stop the process and return its exit code (``None`` if it was never started)."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(self.stop_signal)
            try:
                self._popen.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        return self._popen.returncode

    async def stop_async(self) -> int | None:
        return await asyncio.to_thread(self.stop)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: a port whose old connections linger in TIME_WAIT is free to listen on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free_port(port: int, what: str, setting: str, host: str = "127.0.0.1") -> None:
    if not port_is_free(port, host):
        raise PortInUseError(f"port {port} ({what}) on {host} is already in use; free it or set {setting}")


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """A port the kernel just handed out, not one of ``avoid``; another process may still take it before we bind it.

    ``avoid``: ports set aside for servers that have not bound them yet (the kernel may hand those out meanwhile).
    """
    held: list[socket.socket] = []
    try:
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)  # held until the end: the kernel cannot hand the same avoided port out again
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
            if port not in avoid:
                return port
    finally:
        for sock in held:
            sock.close()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different free ports, for servers started side by side (the kernel may hand one out twice)."""
    ports: list[int] = []
    while len(ports) < count:
        ports.append(free_port(host, avoid=ports))
    return ports


def tcp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def wait_until_listening(proc: ManagedProcess, host: str, port: int, timeout: float) -> None:
    """Wait until ``proc`` accepts TCP connections on ``port``; fail fast if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.running():
            raise StackError(
                f"{proc.name} exited with code {proc.returncode} while starting; "
                f"see {proc.log_path}:\n{proc.log_tail()}"
            )
        if await asyncio.to_thread(tcp_answers, host, port):
            return
        await asyncio.sleep(0.1)
    raise StartupTimeoutError(f"{proc.name} did not listen on {host}:{port} within {timeout:.0f}s; see {proc.log_path}")
