"""The SDK finds its key by itself: the one given, else AGL_API_KEY, else ``<AGL_DATA_DIR or .agl>/api-key``;
and the API lets it in with it (and refuses it without)."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.auth.discovery import find_api_key, write_key_file
from producers.client import AsyncClient, Client, RetryPolicy
from producers.errors import CommandRejected
from tests.auth.conftest import KeyedApi

pytestmark = [pytest.mark.pg, pytest.mark.kafka]


def test_the_order_of_places_a_key_is_found_in(tmp_path: Path):
    write_key_file(tmp_path, "from-file")
    env = {"AGL_DATA_DIR": str(tmp_path)}
    assert find_api_key(environ=env) == "from-file"
    assert find_api_key(environ=env | {"AGL_API_KEY": "from-env"}) == "from-env"
    assert find_api_key("given", environ=env | {"AGL_API_KEY": "from-env"}) == "given"
    assert find_api_key(environ={"AGL_DATA_DIR": str(tmp_path / "none")}) is None


async def test_the_sdk_sends_the_key_from_the_environment_or_the_data_dir(
    api_with_keys: KeyedApi, tmp_path: Path, monkeypatch
):
    api = api_with_keys
    publish = api.keys["publish"].key
    monkeypatch.delenv("AGL_API_KEY", raising=False)
    monkeypatch.setenv("AGL_DATA_DIR", str(tmp_path))  # empty: no key anywhere
    async with AsyncClient(api.url, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(CommandRejected) as refused:
            await client.enqueue_rollout({"q": 1}, rollout_id="ro-no-key")
        assert refused.value.status_code == 401

    monkeypatch.setenv("AGL_API_KEY", publish)
    async with AsyncClient(api.url, retry=RetryPolicy(attempts=1)) as client:
        answer = await client.enqueue_rollout({"q": 1}, rollout_id="ro-env-key")
        assert answer.rollouts[0].rollout_id == "ro-env-key"

    monkeypatch.delenv("AGL_API_KEY")
    write_key_file(tmp_path, publish)
    async with AsyncClient(api.url, retry=RetryPolicy(attempts=1)) as client:
        answer = await client.enqueue_rollout({"q": 1}, rollout_id="ro-file-key")
        assert answer.rollouts[0].rollout_id == "ro-file-key"
    # An explicit key wins: a read-only one may not publish.
    async with AsyncClient(api.url, retry=RetryPolicy(attempts=1), api_key=api.keys["read"].key) as client:
        with pytest.raises(CommandRejected) as refused:
            await client.enqueue_rollout({"q": 1}, rollout_id="ro-read-key")
        assert refused.value.status_code == 403


def test_the_blocking_client_finds_the_key_too(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("AGL_API_KEY", raising=False)
    monkeypatch.setenv("AGL_DATA_DIR", str(tmp_path))
    write_key_file(tmp_path, "agl_0123456789abcdef_" + "k" * 43)
    with Client("http://127.0.0.1:9") as client:
        assert client._headers["authorization"] == "Bearer agl_0123456789abcdef_" + "k" * 43
