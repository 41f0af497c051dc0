"""The resources read model over HTTP: every version kept, latest by a partition-independent rule, copies ignored."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from asgi_lifespan import LifespanManager

from agl.app import create_app
from agl.config import Settings
from consumers.worker import ProjectionWorker
from projections.base import Projection
from projections.resources import PROJECTION as RESOURCES
from schemas import TOPIC_BY_EVENT, Event, LLMResource, Position, PromptTemplateResource, encode, to_token
from tests.consumers.helpers import running
from tests.fixtures.events import T0, make_resources

pytestmark = [pytest.mark.kafka, pytest.mark.pg]


async def publish_with_token(bootstrap: str, prefix: str, events: list[Event]) -> str:
    """Publish in order and return the position token a command would answer with."""
    positions = []
    async with AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all") as producer:
        for event in events:
            value, headers = encode(event)
            topic = TOPIC_BY_EVENT[type(event)].full_name(prefix)
            meta = await producer.send_and_wait(topic, value, key=event.key(), headers=headers)
            positions.append(Position(topic=meta.topic, partition=meta.partition, offset=meta.offset))
    return to_token(positions)


@pytest.fixture
async def api(kafka_bootstrap, kafka_topics, pg_url):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=kafka_topics)
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        yield client


def worker_for(projection: Projection, kafka_bootstrap: str, pg_url: str, prefix: str) -> ProjectionWorker:
    return ProjectionWorker(
        projection, bootstrap=kafka_bootstrap, database_url=pg_url, topic_prefix=prefix, use_group=False
    )


def prompt(text: str) -> dict[str, PromptTemplateResource]:
    return {"system_prompt": PromptTemplateResource(template=text)}


async def test_versions_are_kept_and_latest_is_decided_by_time_then_id_then_version(
    api, kafka_bootstrap, kafka_topics, pg_url
):
    first = make_resources(resources_id="prompts", resources_version=1, resources=prompt("v1"), occurred_at=T0)
    llm = {"main_llm": LLMResource(endpoint="http://llm:8000/v1", model="smol")}
    events: list[Event] = [
        first,
        make_resources(resources_id="llm", resources_version=1, resources=llm, occurred_at=T0 + timedelta(seconds=5)),
        make_resources(
            resources_id="prompts", resources_version=2, resources=prompt("v2"), occurred_at=T0 + timedelta(seconds=10)
        ),
        first,  # a re-delivered copy: changes nothing
        # Another publication of an existing version: the first one stays.
        make_resources(resources_id="prompts", resources_version=1, resources=prompt("impostor"), occurred_at=T0),
    ]
    async with running(worker_for(RESOURCES, kafka_bootstrap, pg_url, kafka_topics)):
        token = await publish_with_token(kafka_bootstrap, kafka_topics, events)
        page = (await api.get("/v1/resources", params={"after": token})).json()
        assert page["total"] == 2
        assert [(r["resources_id"], r["latest_version"], r["versions"], r["names"]) for r in page["items"]] == [
            ("llm", 1, 1, ["main_llm"]),
            ("prompts", 2, 2, ["system_prompt"]),
        ]
        prompts = page["items"][1]
        assert (prompts["created_at"], prompts["updated_at"]) == (
            "2025-01-02T03:04:05.678000Z",
            "2025-01-02T03:04:15.678000Z",
        )
        assert (await api.get("/v1/resources", params={"limit": 1, "offset": 1})).json()["items"][0][
            "resources_id"
        ] == "prompts"

        latest = (await api.get("/v1/resources/latest")).json()
        assert (latest["resources_id"], latest["resources_version"]) == ("prompts", 2)
        newest = (await api.get("/v1/resources/prompts")).json()
        assert newest["resources"]["system_prompt"]["template"] == "v2"
        assert newest == latest
        v1 = (await api.get("/v1/resources/prompts", params={"version": 1})).json()
        assert v1["resources"]["system_prompt"] == {
            "resource_type": "prompt_template",
            "template": "v1",
            "engine": "f-string",
        }
        assert v1["created_at"] == "2025-01-02T03:04:05.678000Z"
        assert (await api.get("/v1/resources/llm")).json()["resources"]["main_llm"]["model"] == "smol"
        assert (await api.get("/v1/resources/prompts", params={"version": 3})).status_code == 404
        assert (await api.get("/v1/resources/nope")).status_code == 404

        # Same time as prompts v2: the greater resources_id wins, whatever partition either came from.
        tie = make_resources(
            resources_id="zeta", resources_version=1, resources=prompt("z"), occurred_at=T0 + timedelta(seconds=10)
        )
        token = await publish_with_token(kafka_bootstrap, kafka_topics, [tie])
        latest = (await api.get("/v1/resources/latest", params={"after": token})).json()
        assert (latest["resources_id"], latest["resources_version"]) == ("zeta", 1)
        # An older publication that arrives later is not the latest.
        late = make_resources(resources_id="old", resources_version=7, resources=prompt("o"), occurred_at=T0)
        token = await publish_with_token(kafka_bootstrap, kafka_topics, [late])
        latest = (await api.get("/v1/resources/latest", params={"after": token})).json()
        assert latest["resources_id"] == "zeta"
        assert (await api.get("/v1/resources")).json()["total"] == 4


async def test_nothing_published_is_404(api, kafka_bootstrap, kafka_topics, pg_url):
    async with running(worker_for(RESOURCES, kafka_bootstrap, pg_url, kafka_topics)):
        answer = await api.get("/v1/resources/latest")
        assert answer.status_code == 404 and "no resources" in answer.json()["detail"]
        assert (await api.get("/v1/resources")).json() == {"items": [], "total": 0, "limit": 50, "offset": 0}
