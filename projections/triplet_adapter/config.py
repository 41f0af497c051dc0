"""The adapter's options. A different configuration is a different triplet projection (rebuilt from history)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

from schemas._base import Json

#: Agent Lightning's default (``openai.chat.completion``, searched anywhere in the name, so
#: ``openai.chat.completion.create`` matches too), LangChain's ``chat_model.llm``, and the GenAI semantic
#: conventions' ``{gen_ai.operation.name} {gen_ai.request.model}`` names (``chat Qwen2.5``, ``text_completion x``).
DEFAULT_LLM_CALL_MATCH = r"openai\.chat\.completion|chat_model\.llm|^(chat|text_completion) "

RewardMatch = Literal["first_occurrence", "first_sibling"]
REWARD_MATCHES: tuple[RewardMatch, ...] = ("first_occurrence", "first_sibling")


@dataclass(frozen=True)
class AdapterConfig:
    """How spans become triplets; the defaults are Agent Lightning's ``TracerTraceToTriplet`` defaults.

    - ``llm_call_match``: regex searched (``re.search``) in span names to find LLM calls.
    - ``agent_match``: when set, only calls under an agent span whose agent name matches are kept.
    - ``repair_hierarchy``: re-parent spans under the span whose interval encloses them most tightly.
    - ``exclude_llm_call_in_reward``: calls inside a reward span (an LLM judge) are not triplets.
    - ``reward_match``: positional policy for reward spans without a link.
    - ``skip_empty_token_spans``: drop calls whose prompt or response token ids are empty.
    - ``dedup_llm_call``: nested spans of one call and repeated response ids are counted once.
    """

    llm_call_match: str = DEFAULT_LLM_CALL_MATCH
    agent_match: str | None = None
    repair_hierarchy: bool = True
    exclude_llm_call_in_reward: bool = True
    reward_match: RewardMatch = "first_occurrence"
    skip_empty_token_spans: bool = False
    dedup_llm_call: bool = True

    def __post_init__(self) -> None:
        # A bad configuration is the operator's mistake: fail when the projection is configured, not per attempt.
        if self.reward_match not in REWARD_MATCHES:
            raise ValueError(f"reward_match must be one of {REWARD_MATCHES}, not {self.reward_match!r}")
        for pattern in (self.llm_call_match, self.agent_match):
            try:
                re.compile(pattern or "")
            except re.error as error:
                raise ValueError(f"bad pattern {pattern!r}: {error}") from error

    def as_dict(self) -> dict[str, Json]:
        """JSON-able, with stable keys: the projection stores it beside its name and version."""
        return dict(asdict(self))
