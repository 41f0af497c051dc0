"""The cached virtual environment holding Agent Lightning 0.3 (its real client, runner and server), shared by the
contract tests (tests/compat) and the benchmark beside it (bench/lifecycle.py). Never a project dependency: it is
large (about 800 MB) and installs itself once under .agl/cache on a fresh clone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEER_VENV = REPO / ".agl" / "cache" / "bench-al-venv"
#: litellm is pinned because pip, left alone, backtracks through dozens of 40 MB litellm wheels before settling
#: on one that fits agentlightning 0.3's other requirements; this is the one it settles on.
PEER_REQUIREMENTS = ("agentlightning==0.3.*", "litellm[proxy]==1.108.7")
#: What the environment's processes need: litellm reads its model price list from its package, not the network.
PEER_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def peer_python() -> Path:
    """The Python of the cached Agent Lightning environment, created (once) if missing."""
    python = PEER_VENV / "bin" / "python"
    marker = PEER_VENV / ".installed"
    if python.exists() and marker.exists() and marker.read_text() == " ".join(PEER_REQUIREMENTS):
        return python
    print(f"creating {PEER_VENV} with {' '.join(PEER_REQUIREMENTS)} (once; about 800 MB)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS], check=True)
    marker.write_text(" ".join(PEER_REQUIREMENTS))
    return python
