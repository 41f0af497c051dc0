"""How clients find their API key by themselves, so the embedded stack stays one command.

In order: an explicit ``api_key=``, else ``AGL_API_KEY``, else the file ``<AGL_DATA_DIR or .agl>/api-key`` that
``agl up`` writes (mode 0600) with the local admin key. The SDK is imported by user scripts that have no
``main()`` of ours to read settings in, which is why this reads the environment itself.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

API_KEY_ENV = "AGL_API_KEY"
KEY_FILE_NAME = "api-key"


def key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE_NAME


def read_key_file(data_dir: Path) -> str | None:
    """The key saved in ``data_dir``, if a readable, non-empty file holds one."""
    try:
        text = key_file(data_dir).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def write_key_file(data_dir: Path, key: str) -> Path:
    """Save ``key`` readable by its owner only (created 0600, never world-readable even for a moment)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path, tmp = key_file(data_dir), key_file(data_dir).with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    tmp.replace(path)
    return path


def find_api_key(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The key a client should send: see the module's docstring. None when there is none."""
    if explicit:
        return explicit
    env = os.environ if environ is None else environ
    from_env = env.get(API_KEY_ENV, "").strip()
    if from_env:
        return from_env
    return read_key_file(Path(env.get("AGL_DATA_DIR") or ".agl").expanduser())


def auth_headers(key: str | None) -> dict[str, str]:
    """The header that carries ``key`` (none without a key)."""
    return {"authorization": f"Bearer {key}"} if key else {}
