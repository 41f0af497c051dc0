"""The workers read model over HTTP: status idle/busy/unknown/stopped as of the read, latest facts win."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projections.workers import PROJECTION as WORKERS
from schemas import Event, WorkerDeregistered, WorkerHeartbeat, WorkerRegistered
from tests.consumers.helpers import running
from tests.projections.test_resources import api, publish_with_token, worker_for

pytestmark = [pytest.mark.kafka, pytest.mark.pg]
__all__ = ["api"]  # a fixture, used by name


def scenario(now: datetime) -> list[Event]:
    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    def beat(worker: str, seconds: float, busy: int, attempts: list[str]) -> WorkerHeartbeat:
        stats = {"busy_slots": busy, "slots": 4, "attempts": list(attempts)}
        return WorkerHeartbeat(worker_id=worker, stats=stats, occurred_at=ago(seconds))

    old_busy_beat = beat("w-busy", 3, 0, [])
    return [
        WorkerRegistered(worker_id="w-idle", capabilities=("gpu",), concurrency=4, occurred_at=ago(5)),
        beat("w-idle", 1, 0, []),
        WorkerRegistered(worker_id="w-busy", concurrency=2, occurred_at=ago(5)),
        beat("w-busy", 1, 2, ["at-1", "at-2"]),
        old_busy_beat,  # older than the one before: it does not overwrite it
        WorkerRegistered(worker_id="w-stale", occurred_at=ago(600)),
        beat("w-stale", 120, 1, ["at-3"]),
        WorkerRegistered(worker_id="w-stopped", occurred_at=ago(10)),
        WorkerDeregistered(worker_id="w-stopped", reason="drained", occurred_at=ago(4)),
        beat("w-stopped", 2, 1, ["at-4"]),  # a late heartbeat does not revive it
        WorkerRegistered(worker_id="w-back", capabilities=("cpu",), occurred_at=ago(100)),
        beat("w-back", 60, 3, ["at-5"]),  # from its previous life
        WorkerDeregistered(worker_id="w-back", occurred_at=ago(50)),
        WorkerRegistered(worker_id="w-back", capabilities=("cpu", "gpu"), concurrency=8, occurred_at=ago(2)),
    ]


async def test_status_capabilities_slots_and_current_work(api, kafka_bootstrap, kafka_topics, pg_url):
    events = scenario(datetime.now(UTC))
    async with running(worker_for(WORKERS, kafka_bootstrap, pg_url, kafka_topics)):
        token = await publish_with_token(kafka_bootstrap, kafka_topics, events)
        page = (await api.get("/v1/workers", params={"after": token})).json()
        assert page["total"] == 5
        assert {w["worker_id"]: w["status"] for w in page["items"]} == {
            "w-back": "idle", "w-busy": "busy", "w-idle": "idle", "w-stale": "unknown", "w-stopped": "stopped",
        }  # fmt: skip
        assert [w["worker_id"] for w in page["items"]] == sorted(w["worker_id"] for w in page["items"])

        busy = (await api.get("/v1/workers/w-busy")).json()
        assert (busy["slots"], busy["busy_slots"], busy["attempts"]) == (2, 2, ["at-1", "at-2"])
        newest_beat = max(e.occurred_at for e in events if isinstance(e, WorkerHeartbeat) and e.worker_id == "w-busy")
        assert datetime.fromisoformat(busy["last_heartbeat_at"]) == newest_beat
        idle = (await api.get("/v1/workers/w-idle")).json()
        assert (idle["capabilities"], idle["slots"], idle["attempts"]) == (["gpu"], 4, [])
        stopped = (await api.get("/v1/workers/w-stopped")).json()
        assert stopped["deregister_reason"] == "drained" and stopped["deregistered_at"] is not None
        back = (await api.get("/v1/workers/w-back")).json()
        assert (back["capabilities"], back["slots"], back["busy_slots"], back["attempts"]) == (["cpu", "gpu"], 8, 0, [])

        # The staleness window is the reader's: a wider one sees the stale worker's last report.
        stale = (await api.get("/v1/workers/w-stale", params={"stale_s": 300})).json()
        assert (stale["status"], stale["attempts"]) == ("busy", ["at-3"])
        assert (await api.get("/v1/workers/w-stale")).json()["status"] == "unknown"
        busy_only = (await api.get("/v1/workers", params={"status": ["busy", "stopped"]})).json()
        assert [w["worker_id"] for w in busy_only["items"]] == ["w-busy", "w-stopped"] and busy_only["total"] == 2
        assert (await api.get("/v1/workers", params={"status": "sleeping"})).status_code == 422
        assert (await api.get("/v1/workers/w-nope")).status_code == 404

        # Every event again (same ids, in reverse order): nothing changes.
        token = await publish_with_token(kafka_bootstrap, kafka_topics, events[::-1])
        again = (await api.get("/v1/workers", params={"after": token})).json()
        assert again == page
