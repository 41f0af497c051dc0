"""Is a component up? Cheap probes used by `agl status`, `agl smoke` and the tests."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import psycopg
from aiokafka import AIOKafkaClient


async def kafka_up(bootstrap: str, timeout: float = 5.0) -> str | None:
    """``None`` when the broker answers a metadata request, else why not."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        await asyncio.wait_for(client.fetch_all_metadata(), timeout)
    except Exception as e:  # noqa: BLE001 - every failure is an answer here
        return str(e) or type(e).__name__
    finally:
        with contextlib.suppress(Exception):
            await client.close()
    return None


async def postgres_up(url: str, timeout: float = 5.0) -> str | None:
    try:
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=max(1, int(timeout))) as conn:
            await conn.execute("SELECT 1")
    except psycopg.Error as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None


async def http_up(url: str, timeout: float = 5.0) -> str | None:
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url)
    except httpx.HTTPError as e:
        return str(e) or type(e).__name__
    return None if response.status_code == 200 else f"HTTP {response.status_code}"
