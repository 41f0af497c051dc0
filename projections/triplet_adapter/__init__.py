"""Traces to triplets: an attempt's spans and rewards become (prompt, response, reward) triplets, per LLM call.

``to_triplets(spans, rewards, config)`` is Agent Lightning's ``TracerTraceToTriplet.adapt`` (v0.3) on our events,
pure and deterministic (no clock, no randomness, no I/O, any span order): the same spans and rewards give equal
triplets, so a rebuilt triplet projection is byte-identical. The steps, one module each:

- ``tree.py``: the trace tree (virtual nodes for lost parents, one virtual root for several roots) and its repair;
- ``calls.py``: LLM-call and agent matching, dedupe; ``payload.py``: token ids and payloads;
- ``encodings.py``: reading a reward from a span in every encoding; ``rewards.py``: binding rewards to calls;
- ``messages.py``: trace to OpenAI chat messages, for prompt optimisation.

Where we differ from Agent Lightning, on purpose (each is tested):

- no spans give ``[]`` (AL raises); a span without an end ends at the attempt's latest known time and an end before
  the start is the start (AL raises on None); a parent cycle is cut (AL fails); a span id seen twice keeps its
  first copy in sequence order;
- repair applies at every node with several children, not only the first; it never moves a span under its own
  descendant (AL can create a cycle); a moved span keeps sequence order among its new siblings (AL appends it);
- the default call pattern also matches the GenAI semantic-convention names (``chat {model}``,
  ``text_completion {model}``) and LangChain's ``chat_model.llm``; agent names also come from ``gen_ai.agent.name``;
- ``dedup_llm_call=False`` turns off both dedupes (AL keeps the response-id one); a kept call lacking token ids or
  logprobs takes them from its duplicate spans (the proxy's span of the same call);
- v0.2 reward spans (``agentlightning.reward`` with ``reward``) are read (v0.3 ignores them); a malformed reward
  value is ``reward_error`` on the triplet it was matched to (AL crashes); booleans are not token ids or rewards;
- rewards bind by link first (``reward.assigned`` span/response ids, ``agentlightning.link.*`` on reward spans),
  then positionally, then the attempt's final reward event (see ``rewards.py``);
- payloads also read the semantic conventions' ``gen_ai.input.messages`` / ``gen_ai.output.messages`` and a family
  written as one JSON attribute; ``Triplet.image_urls`` carries the prompt's image URLs.
"""

from projections.triplet_adapter.adapter import to_triplets
from projections.triplet_adapter.config import DEFAULT_LLM_CALL_MATCH, AdapterConfig, RewardMatch
from projections.triplet_adapter.messages import to_messages
from projections.triplet_adapter.triplet import RewardSource, Triplet

__all__ = [
    "DEFAULT_LLM_CALL_MATCH",
    "AdapterConfig",
    "RewardMatch",
    "RewardSource",
    "Triplet",
    "to_messages",
    "to_triplets",
]
