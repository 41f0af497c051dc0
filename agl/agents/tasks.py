"""The task sets shipped with the agents (``tasks/<kind>.jsonl``) and how a task becomes a rollout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agl.agents.kinds import TASK_KINDS, capabilities_for

TASKS_DIR = Path(__file__).with_name("tasks")


def load_tasks(kind: str) -> list[dict[str, Any]]:
    """The tasks of ``kind``, one JSON object per line: ``id``, ``kind``, ``prompt``, ``check`` and tool ``data``."""
    path = TASKS_DIR / f"{kind}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def shipped_kinds() -> list[str]:
    """The task kinds with a shipped task set (every kind but the ones served through others' sets)."""
    return [kind for kind in TASK_KINDS if (TASKS_DIR / f"{kind}.jsonl").exists()]


def mixed_batch(size: int) -> list[dict[str, Any]]:
    """``size`` tasks taken round-robin over the kinds, so every pool gets work."""
    sets = [load_tasks(kind) for kind in shipped_kinds()]
    return [sets[i % len(sets)][(i // len(sets)) % len(sets[i % len(sets)])] for i in range(size)]


def rollout_body(task: dict[str, Any], *, routed: bool = False, **extra: Any) -> dict[str, Any]:
    """A ``POST /v1/rollouts`` body for ``task``: its input, its kind in the metadata and the kind's capabilities.

    ``routed``: leave the capabilities to the assignment router, which picks an agent type for the ``task_kind``
    and requires the kind's capabilities plus ``agent:<type>`` (it routes only rollouts requiring none).
    """
    return {
        "input": task,
        "required_capabilities": [] if routed else list(capabilities_for(task["kind"])),
        "metadata": {"task_kind": task["kind"], "task_id": task["id"]},
        **extra,
    }
