"""The no-op agent of `bench/lifecycle.py`: returns three spans and emits one reward, doing no work.

Run by ``agl runner --agent bench.lifecycle_agent:agent``; kept apart from the benchmark so a runner process
imports only this and the SDK.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import agl

#: Three steps of an imaginary agent, with attributes about the size of an LLM call's metadata.
STEPS = ("agent.plan", "openai.chat.completion", "agent.answer")


@agl.rollout
async def agent(task: Any) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    agl.emit_reward(1.0)
    return [
        {"name": name, "start_time": now, "end_time": now, "attributes": {"bench.step": i, "bench.task": str(task)}}
        for i, name in enumerate(STEPS)
    ]
