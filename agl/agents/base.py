"""What every agent type shares: a system prompt, tools run on the task, one LLM call through the proxy, a grade.

An agent answers one task (a line of its task set: ``kind``, ``prompt``, ``check`` and the tools' data). Its
tools are plain functions of the task, each recorded as an operation span; their answers go into the prompt as
context (a 135M model answers better when handed the facts). The LLM is always called through the API's LLM proxy
(``proxy_llm`` resource, routed per rollout and attempt), which records the call with its token ids. There is no
fallback answer: an unreachable LLM raises, and the attempt fails and is retried by the rollout's rules.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from agl.agent import AgentError, LitAgent, Rollout
from agl.agents import AGENTS_VERSION
from agl.agents.graders import grade
from agl.agents.kinds import worker_capabilities
from agl.emitters import emit_reward, operation
from agl.llm import AsyncLLMClient
from schemas import LLMResource, ProxyLLMResource, Resource

#: Set by ``agl agents up`` for its runners: the API whose LLM proxy to use when no ``proxy_llm`` is published.
API_URL_ENV = "AGL_AGENTS_API_URL"


@dataclass(frozen=True)
class Tool:
    """A deterministic helper: ``run(task)`` answers a line of context, or None when the task gives it nothing."""

    name: str
    run: Callable[[Mapping[str, Any]], str | None]


def proxied_llm(resources: Mapping[str, Resource]) -> ProxyLLMResource:
    """The LLM through the proxy: the published ``proxy_llm``, else the ``llm`` model behind ``AGL_AGENTS_API_URL``."""
    for resource in resources.values():
        if isinstance(resource, ProxyLLMResource):
            return resource
    api_url = os.environ.get(API_URL_ENV)
    model = next((r.model for r in resources.values() if isinstance(r, LLMResource)), None)
    if api_url and model:
        return ProxyLLMResource(endpoint=api_url, model=model)
    raise AgentError("agents call the LLM through the API's proxy: publish a proxy_llm resource (agl up does)")


class SpecialistAgent(LitAgent[Mapping[str, Any]]):
    """One agent type. Subclasses set the class attributes; :meth:`rollout` is shared."""

    agent_type: ClassVar[str]
    system_prompt: ClassVar[str]
    tools: ClassVar[tuple[Tool, ...]] = ()
    version: ClassVar[str] = AGENTS_VERSION
    #: SmolLM2 rambles on to whatever limit it is given, and the answer comes first: measured on the shipped task
    #: sets, 24 tokens earn the same rewards as 48 with a quarter fewer tokens generated. A type whose answer is a
    #: list (the QA tester's boundary values) asks for more.
    max_tokens: ClassVar[int] = 24

    @classmethod
    def capabilities(cls) -> tuple[str, ...]:
        return worker_capabilities(cls.agent_type, cls.version)

    def messages(self, task: Mapping[str, Any]) -> list[dict[str, str]]:
        context = []
        for tool in self.tools:
            with operation(name=f"tool.{tool.name}", agent_type=self.agent_type) as op:
                answer = tool.run(task)
                op.set_output(answer)
            if answer is not None:
                context.append(f"{tool.name}: {answer}")
        prompt = str(task["prompt"])
        if context:
            prompt = "Facts:\n" + "\n".join(context) + "\n\n" + prompt
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}]

    async def rollout(self, task: Mapping[str, Any], resources: Mapping[str, Resource], rollout: Rollout) -> None:
        llm = proxied_llm(resources)
        async with AsyncLLMClient.from_resource(
            llm, rollout_id=rollout.rollout_id, attempt_id=rollout.attempt_id
        ) as client:
            reply = await client.chat(self.messages(task), temperature=0, max_tokens=self.max_tokens)
        emit_reward(grade(task["check"], reply.content), link=reply)
