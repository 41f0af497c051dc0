"""The embedded PostgreSQL's Unix-domain socket: where it is, when there is none, and that clients reach it."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from agl.stack._process import free_port
from agl.stack.postgres import MAX_SOCKET_PATH, EmbeddedPostgres


def test_the_socket_lives_in_the_data_directory_and_the_local_url_names_it(tmp_path):
    server = EmbeddedPostgres(data_dir=tmp_path / "data", port=5999)
    assert server.socket_dir == (tmp_path / "data").absolute()
    params = psycopg.conninfo.conninfo_to_dict(server.local_url("x"))
    assert params == {"user": "postgres", "dbname": "x", "host": str(tmp_path / "data"), "port": "5999"}


@pytest.mark.parametrize("name", ["a,b", "with space", 'quo"te', "é"])
def test_a_directory_the_setting_would_misread_gets_no_socket(tmp_path, name):
    server = EmbeddedPostgres(data_dir=tmp_path / name, port=5999)
    assert server.socket_dir is None
    assert server.local_url() == server.url() == "postgresql://postgres@127.0.0.1:5999/agl"


def test_a_directory_too_long_for_a_socket_address_gets_no_socket(tmp_path):
    fits = EmbeddedPostgres(data_dir=Path("/" + "d" * (MAX_SOCKET_PATH - len("//.s.PGSQL.5999"))), port=5999)
    assert fits.socket_dir is not None
    longer = EmbeddedPostgres(data_dir=Path("/" + "d" * (MAX_SOCKET_PATH - len("//.s.PGSQL.5999") + 1)), port=5999)
    assert longer.socket_dir is None
    assert longer.local_url() == longer.url()


async def test_clients_reach_the_server_over_the_socket_and_over_tcp(tmp_path):
    server = EmbeddedPostgres(data_dir=tmp_path / "data", port=free_port(), durable=False)
    await server.start(60)
    try:
        async with await psycopg.AsyncConnection.connect(server.local_url()) as conn:
            row = await (await conn.execute("SELECT inet_server_addr(), current_database()")).fetchone()
        assert row == (None, "agl"), "no server address: a Unix-domain socket"
        async with await psycopg.AsyncConnection.connect(server.url()) as conn:
            row = await (await conn.execute("SELECT host(inet_server_addr())")).fetchone()
        assert row == ("127.0.0.1",)
    finally:
        await server.stop()
