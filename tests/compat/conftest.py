"""A live stack for the compatibility tests: the API, the watchdog and the rollouts, resources, spans and workers
projections as real processes (the stock Agent Lightning client needs a real port)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.compat.agl_venv import peer_python
from tests.e2e.conftest import LiveServices, live_services

#: The recorded answers of the real v0.3.0 server, kept beside the tests.
GOLDEN_COPY = Path(__file__).with_name("al-v030-golden.json")


def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN_COPY.read_text())
    return data


@pytest.fixture(scope="session")
def agl_python() -> Path:
    """The Agent Lightning 0.3 environment's Python, installed on first use (a fresh clone: about 800 MB, once;
    the agl_client tests allow for it in their timeout)."""
    return peer_python()


@pytest_asyncio.fixture(loop_scope="session")
async def agl_live(kafka_bootstrap: str, kafka_topics: str, pg_url: str, tmp_path: Path) -> AsyncIterator[LiveServices]:
    async with live_services(kafka_bootstrap, kafka_topics, pg_url, tmp_path) as services:
        services.start("projection-spans", "projections", "run", "spans")
        services.start("projection-workers", "projections", "run", "workers")
        await _projections_started(services.api_url)
        yield services


async def _projections_started(api_url: str, timeout: float = 180) -> None:
    """Until every read model the v0.3 routes read has its tables (a read before answers 503)."""
    reads: list[tuple[str, str, dict[str, str] | None]] = [("GET", "/rollouts", None), ("GET", "/resources", None)]
    reads.append(("GET", "/workers", None))
    reads.append(("POST", "/spans/search", {"rollout_id": "ro-none"}))
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=f"{api_url}/v1/agl", timeout=30) as http:
        for method, path, body in reads:
            while (await http.request(method, path, json=body)).status_code != 200:
                assert asyncio.get_running_loop().time() < deadline, f"{path} never answered 200"
                await asyncio.sleep(0.2)
