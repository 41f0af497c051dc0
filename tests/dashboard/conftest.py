"""Debian's Chromium for the dashboard's browser test: installed here when missing (`make chromium` does the same
ahead of `make test`), and a clear failure, never a silent skip, when it cannot be."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: Without the background-networking flags, Chromium keeps dialling Google's hosts, which a closed network refuses.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _install_chromium() -> str:
    """apt-get as root, else through passwordless sudo; what it printed, for the failure message."""
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and shutil.which("sudo") is None:
        return "not root and no sudo"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    out = []
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, env=env, timeout=900, check=False)
        out.append(f"$ {' '.join(command)} -> {done.returncode}\n{done.stderr[-2000:]}")
        if done.returncode:
            break
    return "\n".join(out)


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        report = _install_chromium()
        if not CHROMIUM.exists():
            pytest.fail(
                f"the dashboard test needs Debian's chromium at {CHROMIUM} and could not install it "
                f"(run `make chromium`, or `apt-get install chromium` as root):\n{report}"
            )
    return CHROMIUM
