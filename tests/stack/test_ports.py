"""The stack's automatic ports keep clear of the ports its broker, database and API are set to, which those may not
have bound yet when the embedded LLM starts beside them (a Kafka controller once lost its port that way)."""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
import weakref
from typing import Any

import pytest

from agl.config import Settings
from agl.stack._process import free_port, free_ports, port_is_free
from agl.stack.llm import EmbeddedLLM, LLMMemo, _replica_servers, choose_port, write_memo


class _FirstBindLandsOn(socket.socket):
    """A real socket whose first ``bind`` to port 0 is steered to ``first``: the kernel handing out an avoided port."""

    first: int | None = None

    def bind(self, address: Any) -> None:
        host, port = address
        if port == 0 and _FirstBindLandsOn.first is not None:
            port, _FirstBindLandsOn.first = _FirstBindLandsOn.first, None
        super().bind((host, port))


def test_free_port_never_hands_out_an_avoided_port(monkeypatch):
    avoided = free_port()
    _FirstBindLandsOn.first = avoided
    monkeypatch.setattr(socket, "socket", _FirstBindLandsOn)  # the module _process binds with
    port = free_port(avoid={avoided})
    assert port != avoided
    assert _FirstBindLandsOn.first is None  # the kernel's (steered) first answer was seen and passed over
    monkeypatch.undo()
    assert port_is_free(avoided) and port_is_free(port)  # nothing is left holding either


class _Listening:
    """Stands in for an xllamacpp.Server: a socket listening where the kernel put it."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.listening_address = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __del__(self) -> None:
        self.sock.close()


def test_a_replica_that_lands_on_a_reserved_port_is_replaced_and_let_go():
    reserved = free_port()
    landed_on_reserved = _Listening(reserved)
    gone = weakref.ref(landed_on_reserved)
    made = iter([landed_on_reserved])

    servers = _replica_servers(2, lambda: next(made, None) or _Listening(), {reserved})

    del landed_on_reserved
    gc.collect()
    assert len(servers) == 2
    ports = {int(s.listening_address.rsplit(":", 1)[1]) for s in servers}
    assert len(ports) == 2 and reserved not in ports
    assert gone() is None and port_is_free(reserved)  # the misplaced one was stopped: Kafka can have its port


@pytest.mark.parametrize("setting", ["kafka_controller_port", "kafka_port", "postgres_port", "api_port"])
def test_the_last_llm_port_is_not_reused_once_another_service_is_set_to_it(tmp_path, setting):
    last = free_port()
    write_memo(tmp_path, LLMMemo(port=last))
    assert choose_port(Settings(data_dir=tmp_path)) == last  # free and nobody else's: the endpoint stays the same
    port = choose_port(Settings(data_dir=tmp_path).model_copy(update={setting: last}))
    assert port != last


def test_free_ports_are_all_different():
    ports = free_ports(6)
    assert len(set(ports)) == 6 and all(port_is_free(p) for p in ports)


@pytest.mark.parametrize(("value", "says"), [("0", "ports are 1-65535"), ("80,x", "comma-separated list of ports")])
def test_agl_llm_up_refuses_bad_avoided_ports_in_one_line(value, says):
    result = subprocess.run(
        [sys.executable, "-m", "agl", "llm", "up", "--avoid-ports", value],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and says in result.stderr


def test_the_stack_hands_its_ports_to_the_llm_it_starts(tmp_path):
    llm = EmbeddedLLM(port=1, log_path=tmp_path / "llm.log", replicas=2, avoid_ports={9093, 5433})
    assert llm.argv()[-2:] == ["--avoid-ports", "5433,9093"]
