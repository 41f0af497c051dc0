"""Agents the end-to-end tests run in ``agl runner`` processes."""

from __future__ import annotations

import time
from typing import Any

import agl


@agl.rollout
def stuck_first_time(task: Any, rollout: agl.Rollout) -> float:
    """Hangs on a rollout's first attempt (the runner is killed meanwhile), succeeds on any later one."""
    if rollout.sequence_id == 1:
        time.sleep(600)
    return 1.0


@agl.rollout
def quick(task: Any) -> float:
    """A no-op agent: reward 1."""
    time.sleep(0.05)
    return 1.0


@agl.rollout
def flaky(task: Any, rollout: agl.Rollout) -> float:
    """Fails the first attempt of every third rollout (decided by the task, so every runner agrees)."""
    time.sleep(0.02)
    if task["n"] % 3 == 0 and rollout.sequence_id == 1:
        raise RuntimeError(f"flaky first attempt of task {task['n']}")
    return 1.0
