"""Resources: a named, versioned set of LLM endpoints and prompt templates. Keyed by resources_id."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from schemas._base import Event, Frozen, Json
from schemas.bounds import INT4_MAX, MAX_ID_LENGTH


class _LLMFields(Frozen):
    endpoint: str
    model: str
    #: A reference to a secret (e.g. "env:OPENAI_API_KEY"), never the key itself: the log is kept forever.
    api_key_ref: str | None = None
    sampling_parameters: dict[str, Json] = Field(default_factory=dict)


class LLMResource(_LLMFields):
    resource_type: Literal["llm"] = "llm"


class ProxyLLMResource(_LLMFields):
    """An LLM whose base URL is routed per rollout and attempt: ``<endpoint>/rollout/<id>/attempt/<id>/v1``."""

    resource_type: Literal["proxy_llm"] = "proxy_llm"

    def routed_endpoint(self, rollout_id: str, attempt_id: str) -> str:
        return f"{self.endpoint.rstrip('/')}/rollout/{rollout_id}/attempt/{attempt_id}/v1"


class PromptTemplateResource(Frozen):
    resource_type: Literal["prompt_template"] = "prompt_template"
    template: str
    engine: Literal["f-string", "jinja", "poml"] = "f-string"


Resource = Annotated[LLMResource | ProxyLLMResource | PromptTemplateResource, Field(discriminator="resource_type")]


class ResourcesPublished(Event):
    key_field: ClassVar[str] = "resources_id"
    type: Literal["resources.published"] = "resources.published"
    version: Literal[1] = 1
    resources_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    resources_version: int = Field(ge=1, le=INT4_MAX, description="1-based version of this resources_id")
    resources: dict[str, Resource] = Field(description="named resources, e.g. 'main_llm', 'system_prompt'")
