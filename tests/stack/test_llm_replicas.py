"""The embedded LLM as single-threaded replicas behind one port: requests shared, streams passed through, clean stop."""

from __future__ import annotations

import asyncio
import time

import httpx

from agl.stack._process import free_port, port_is_free
from agl.stack.llm import EmbeddedLLM

QUESTION = [{"role": "user", "content": "Name a colour."}]


async def test_replicas_share_the_requests_stream_and_stop_cleanly(tmp_path):
    llm = EmbeddedLLM(port=free_port(), log_path=tmp_path / "llm.log", replicas=2)
    await llm.start(60)
    proc = llm.process
    assert proc is not None and proc.pid is not None
    try:
        async with httpx.AsyncClient(base_url=llm.endpoint, timeout=120) as http:
            body = {"model": llm.model, "messages": QUESTION, "max_tokens": 8, "temperature": 0}
            answers = await asyncio.gather(*(http.post("/chat/completions", json=body) for _ in range(6)))
            assert all(a.status_code == 200 and a.json()["choices"][0]["message"]["content"] for a in answers)
            # Six at once over two idle replicas: each took some (fewest in flight first).
            assert {a.headers["x-agl-llm-replica"] for a in answers} == {"0", "1"}

            async with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as streamed:
                assert streamed.status_code == 200
                assert streamed.headers["content-type"].startswith("text/event-stream")
                events = [line async for line in streamed.aiter_lines() if line.startswith("data: ")]
            assert len(events) >= 3 and events[-1] == "data: [DONE]"

            # The server's own routes pass through too (the proxy asks them for prompt token ids).
            tokens = await http.post(llm.endpoint.removesuffix("/v1") + "/tokenize", json={"content": "hello"})
            assert tokens.status_code == 200 and tokens.json()["tokens"]
    finally:
        t0 = time.monotonic()
        await llm.stop()
    assert proc.returncode == 0 and time.monotonic() - t0 < 10
    assert port_is_free(llm.port)
    log = (tmp_path / "llm.log").read_text()
    assert "(2 replicas)" in log
