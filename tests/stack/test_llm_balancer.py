"""The LLM balancer's choices, without replicas: the least busy, ties in turn, a system prompt kept on its replica."""

from __future__ import annotations

import subprocess
import sys

import httpx
import orjson

from agl.stack._process import free_port
from agl.stack.llm_balancer import AFFINITY_SLACK, Balancer, _affinity

QUESTION = [{"role": "user", "content": "Name a colour."}]


def test_the_least_busy_replica_is_picked_and_ties_take_turns():
    balancer = Balancer(["http://a:1", "http://b:2", "http://c:3/"])
    assert balancer.upstreams == ["http://a:1", "http://b:2", "http://c:3"]
    assert [balancer.pick() for _ in range(6)] == ["http://a:1", "http://b:2", "http://c:3"] * 2
    balancer.in_flight["http://a:1"] = 2
    balancer.in_flight["http://c:3"] = 1
    assert {balancer.pick() for _ in range(4)} == {"http://b:2"}


def test_a_system_prompt_stays_on_its_replica_until_that_one_is_much_busier():
    balancer = Balancer(["http://a:1", "http://b:2"])
    key = _affinity("/v1/chat/completions", orjson.dumps({"messages": [{"role": "system", "content": "You are X."}]}))
    assert key is not None
    home = balancer.pick(key)
    assert {balancer.pick(key) for _ in range(5)} == {home}  # always the same one while all are idle
    balancer.in_flight[home] = AFFINITY_SLACK
    assert balancer.pick(key) == home  # busier by the slack: still home
    balancer.in_flight[home] = AFFINITY_SLACK + 1
    assert balancer.pick(key) != home  # busier than that: the least busy
    # Only a chat's system prompt is a key: no system message, another route, or a body that is not JSON.
    assert _affinity("/v1/chat/completions", orjson.dumps({"messages": QUESTION})) is None
    assert _affinity("/v1/completions", orjson.dumps({"prompt": "x"})) is None
    assert _affinity("/v1/chat/completions", b"not json") is None
    assert _affinity("/v1/chat/completions", b"[1, 2]") is None


async def test_an_unreachable_replica_is_a_502_with_a_json_error():
    balancer = Balancer([f"http://127.0.0.1:{free_port()}"])  # nothing listens there
    try:
        transport = httpx.ASGITransport(app=balancer)
        async with httpx.AsyncClient(transport=transport, base_url="http://llm") as http:
            answer = await http.post("/v1/chat/completions", json={"messages": QUESTION})
        assert answer.status_code == 502
        assert answer.json()["error"]["type"] == "unavailable_error"
        assert balancer.in_flight == dict.fromkeys(balancer.upstreams, 0)
    finally:
        await balancer.aclose()


def test_a_replica_count_out_of_bounds_is_refused_before_anything_starts():
    for wrong in ("0", "65", "many"):
        argv = [sys.executable, "-m", "agl", "llm", "up", "--replicas", wrong]
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "--replicas" in done.stderr
