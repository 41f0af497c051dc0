"""An example agent: ask the LLM a short arithmetic question, reward 1.0 for the right result, else 0.0.

Run it on the tasks shipped beside it, against a running stack (``agl up``)::

    agl runner --agent examples.math_agent:math_agent --slots 2

or from a script or notebook, without a runner of your own::

    import agl
    from examples.math_agent import math_agent, load_tasks

    for rollout in agl.dev(math_agent, load_tasks()):
        print(rollout.status, rollout.reward, rollout.input["question"])

The LLM is the ``llm`` resource published on the stack (``agl up`` publishes its embedded model). A small model
such as SmolLM2-135M is often wrong: then the reward is 0.0 and the attempt still succeeds. The prompt shows it one
worked example (``2 + 3 = 5``): told only to "answer with the number only", SmolLM2-135M explains instead
("To add 7 and 5, you simply...") and the shipped tasks all score 0; with the example it answers in that form and
gets about half of them right, a reward with something to learn from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import agl
from agl.agent import AgentError
from agl.llm import AsyncLLMClient
from schemas import LLMResource, ProxyLLMResource, Resource

TASKS = Path(__file__).with_name("math_tasks.jsonl")
SYSTEM = "You are a calculator."
#: One worked question and answer, shown before the task's question: the form the reply should take.
EXAMPLE = ("What is 2 + 3?", "2 + 3 = 5")
#: A number: an optional sign, digits, an optional decimal part.
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def load_tasks(path: Path = TASKS) -> list[dict[str, Any]]:
    """The tasks, one JSON object per line: ``{"question": "What is 7 + 5?", "answer": 12}``."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def first_number(text: str | None) -> float | None:
    found = NUMBER.search(text or "")
    return float(found.group()) if found else None


def result_of(text: str | None) -> float | None:
    """The reply's result: the first number after its last ``=`` ("7 + 5 = 12." is 12), else its first number."""
    text = text or ""
    return first_number(text.rpartition("=")[2]) if "=" in text else first_number(text)


def messages_for(question: str) -> list[dict[str, str]]:
    example_question, example_answer = EXAMPLE
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": example_question},
        {"role": "assistant", "content": example_answer},
        {"role": "user", "content": question},
    ]


def reward_of(reply: str | None, answer: float) -> float:
    number = result_of(reply)
    return 1.0 if number is not None and abs(number - float(answer)) < 1e-9 else 0.0


def _llm(resources: Mapping[str, Resource]) -> LLMResource | ProxyLLMResource:
    """The LLM to call: through the proxy when one is published (``agl up`` publishes ``proxy_llm``: the API
    forwards each call to ``llm`` and records it with its token ids), else ``llm``, else any LLM resource."""
    for name in ("proxy_llm", "llm"):
        named = resources.get(name)
        if isinstance(named, (LLMResource, ProxyLLMResource)):
            return named
    for resource in resources.values():
        if isinstance(resource, (LLMResource, ProxyLLMResource)):
            return resource
    raise AgentError("the math agent needs an LLM resource (publish one named 'llm')")


@agl.rollout
async def math_agent(task: Mapping[str, Any], resources: Mapping[str, Resource], rollout: agl.Rollout) -> None:
    """One question, one LLM call and its reward.

    The LLM client records the call as an ``openai.chat.completion`` span of the attempt, with its messages and
    its prompt and response token ids (what training needs), and the reward is linked to that call.
    """
    llm = _llm(resources)
    messages = messages_for(task["question"])
    async with AsyncLLMClient.from_resource(
        llm, rollout_id=rollout.rollout_id, attempt_id=rollout.attempt_id
    ) as client:
        reply = await client.chat(messages, temperature=0, max_tokens=16)
    agl.emit_reward(reward_of(reply.content, task["answer"]), link=reply)
