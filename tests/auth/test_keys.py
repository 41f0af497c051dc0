"""Keys are hashed at rest, revocation takes effect within the cache's time, every change is an audit event on
the log (never with a secret), `agl keys` prints a new key alone on its last line and never shows a secret again,
and `agl up`'s local admin key is saved 0600 and reused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import stat
import time
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer

from agl.cli import main
from producers.auth.bootstrap import ensure_local_admin_key
from producers.auth.discovery import read_key_file
from producers.auth.keys import parse_key, revoke_key, verified_scopes
from producers.auth.middleware import CACHE_S
from producers.publisher import EventPublisher
from schemas.topics import AUDIT
from tests.auth.conftest import KeyedApi, new_key

pytestmark = [pytest.mark.pg, pytest.mark.kafka]

KEY_LINE = re.compile(r"^agl_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")


async def audit_records(bootstrap: str, prefix: str, want: int, timeout_s: float = 30.0) -> list[bytes]:
    """At least ``want`` record values of the audit topic, from its start."""
    consumer = AIOKafkaConsumer(
        AUDIT.full_name(prefix), bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(values) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            values += [r.value for records in batch.values() for r in records if r.value is not None]
    finally:
        await consumer.stop()
    return values


async def test_a_revoked_key_is_refused_within_the_cache_time(api_with_keys: KeyedApi):
    api = api_with_keys
    used = await new_key(api.pg_url, api.prefix, ["read"])
    unused = await new_key(api.pg_url, api.prefix, ["read"])
    async with (
        httpx.AsyncClient(base_url=api.url) as http,
        await psycopg.AsyncConnection.connect(api.pg_url, autocommit=True) as conn,
    ):
        assert (await http.get("/metrics", headers={"x-api-key": used.key})).status_code == 200
        encoder = EventPublisher("", topic_prefix=api.prefix)
        for key in (used, unused):
            assert await revoke_key(conn, encoder, key.info.key_id, revoked_by="test")
        assert await revoke_key(conn, encoder, used.info.key_id) == [], "a second revocation records nothing"
        # Never seen by the API: refused at once.
        assert (await http.get("/metrics", headers={"x-api-key": unused.key})).status_code == 401
        await asyncio.sleep(CACHE_S + 0.5)
        refused = await http.get("/metrics", headers={"x-api-key": used.key})
        assert refused.status_code == 401, refused.text


async def test_keys_are_hashed_at_rest_and_audited_without_secrets(api_with_keys: KeyedApi, kafka_bootstrap: str):
    api = api_with_keys
    new = await new_key(api.pg_url, api.prefix, ["run", "traces"], name="ci")
    key_id, secret = parse_key(new.key) or ("", "")
    async with await psycopg.AsyncConnection.connect(api.pg_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT * FROM api_keys WHERE key_id = %s", (key_id,))
        row = await cur.fetchone()
        assert row is not None
        assert all(secret not in str(value) and new.key not in str(value) for value in row)
        cur = await conn.execute("SELECT hash, scopes FROM api_keys WHERE key_id = %s", (key_id,))
        stored, scopes = await cur.fetchone() or (b"", [])
        assert bytes(stored) == hashlib.sha256(secret.encode()).digest() and scopes == ["run", "traces"]
        assert await verified_scopes(conn, new.key) == ("run", "traces")
        assert await verified_scopes(conn, new.key[:-1] + ("B" if new.key[-1] != "B" else "C")) is None
        await revoke_key(conn, EventPublisher("", topic_prefix=api.prefix), key_id, revoked_by="auditor")
    # The fixture's six keys, this one, its revocation: published by the API's outbox relay.
    values = await audit_records(kafka_bootstrap, api.prefix, want=8)
    events = [orjson.loads(v) for v in values]
    mine = [e for e in events if e["key_id"] == key_id]
    assert [e["type"] for e in mine] == ["apikey.created", "apikey.revoked"]
    assert mine[0]["scopes"] == ["run", "traces"] and mine[0]["name"] == "ci" and mine[1]["revoked_by"] == "auditor"
    # The whole secret (it may itself hold "_": token_urlsafe), never a fragment that could match by chance.
    secrets = [(parse_key(k.key) or ("", k.key))[1] for k in (*api.keys.values(), new)]
    assert all(len(s) >= 40 for s in secrets)
    assert not any(s.encode() in v for s in secrets for v in values)
    assert not any(b"hash" in v for v in values)


@pytest.fixture
def cli_env(kafka_bootstrap: str, kafka_topics: str, pg_url: str, tmp_path: Path, monkeypatch) -> tuple[str, str]:
    """`agl` in this process pointed at the test's broker, topics and database; (bootstrap, prefix)."""
    for name, value in {
        "AGL_DATABASE_URL": pg_url, "AGL_KAFKA_BOOTSTRAP": kafka_bootstrap, "AGL_TOPIC_PREFIX": kafka_topics,
        "AGL_DATA_DIR": str(tmp_path),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return kafka_bootstrap, kafka_topics


def test_the_cli_creates_lists_and_revokes_keys(cli_env: tuple[str, str], capsys):
    kafka_bootstrap, kafka_topics = cli_env
    assert main(["keys", "create", "--scope", "publish", "--scope", "read", "--name", "notebook"]) == 0
    out, err = capsys.readouterr()
    key = out.rstrip("\n").splitlines()[-1]
    assert KEY_LINE.match(key), out
    assert "stays in the outbox" not in err, "the audit event should have been published by the command's relay"
    key_id, secret = parse_key(key) or ("", "")
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "notebook" in listed and "publish,read" in listed
    assert secret not in listed
    assert main(["keys", "revoke", key_id]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(key_id))
    assert not row.rstrip().endswith("-"), "the revocation time is listed"
    assert main(["keys", "revoke", "0000000000000000"]) == 1
    with pytest.raises(SystemExit):
        main(["keys", "create", "--scope", "root"])
    values = asyncio.run(audit_records(kafka_bootstrap, kafka_topics, want=2))
    assert [orjson.loads(v)["type"] for v in values] == ["apikey.created", "apikey.revoked"]
    assert not any(secret.encode() in v for v in values)


async def test_agl_up_saves_a_local_admin_key_once(pg_url: str, tmp_path: Path):
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        key = await ensure_local_admin_key(conn, tmp_path)
        path = tmp_path / "api-key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert read_key_file(tmp_path) == key and await verified_scopes(conn, key) == ("admin",)
        assert await ensure_local_admin_key(conn, tmp_path) == key, "a working key is kept"
        await revoke_key(conn, EventPublisher(""), (parse_key(key) or ("", ""))[0])
        replaced = await ensure_local_admin_key(conn, tmp_path)
        assert replaced != key and read_key_file(tmp_path) == replaced
        assert await verified_scopes(conn, replaced) == ("admin",)


async def test_a_client_that_takes_only_a_url_sends_its_key_as_basic_auth(api_with_keys: KeyedApi):
    """``http://agl:<key>@host`` (how Agent Lightning's LightningStoreClient or curl -u can carry a key)."""
    api = api_with_keys
    reader = api.keys["read"].key
    with_key = api.url.replace("://", f"://agl:{reader}@", 1)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{with_key}/v1/agl/statistics")).status_code == 200
        assert (await http.get(api.url.replace("://", "://agl:agl_0000_wrong@", 1) + "/metrics")).status_code == 401
        # Not base64, or no password: no key at all.
        for header in ("Basic !!!", "Basic " + base64.b64encode(reader.encode()).decode(), "Basicx"):
            answer = await http.get(f"{api.url}/metrics", headers={"authorization": header})
            assert answer.status_code == 401, header
        # The scope still holds: a read key cannot publish.
        assert (await http.post(f"{with_key}/v1/rollouts", json={"input": 1})).status_code == 403
