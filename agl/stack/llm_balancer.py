"""One port in front of the embedded LLM's replicas: each request goes to the replica with the fewest in flight.

Why replicas rather than one server with a thread per core: llama.cpp's threads meet at a barrier after every
operation of every step, so one thread preempted by any other process (a broker, a database, a runner waking for
a heartbeat) stalls them all. On the 2 shared cores of this machine, under light but frequent load from twenty
other processes, one server with two threads answered 2.2 agent requests per second, two single-threaded servers
4.2 (quiet: 6.7 and 5.7). Single-threaded servers never wait on each other.

The balancer is a plain ASGI app (served by uvicorn in the LLM's own process): it forwards method, path, query,
headers and body, and streams the answer back as the replica sends it, so server-sent events pass through. A client
that goes away mid-answer is not noticed until the replica has finished (planned: watch for the disconnect and close
the replica's connection, which makes llama.cpp stop generating).
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Headers of one hop only (RFC 9110 7.6.1), plus the ones httpx and uvicorn set for their own hop.
_HOP_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
     b"host", b"content-length"}
)  # fmt: skip
#: The answer's headers uvicorn would otherwise send twice or contradict (it frames the body itself).
_ANSWER_SKIP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server"})
#: How much busier than the least busy replica the one a chat's system prompt hashes to may be and still get it.
AFFINITY_SLACK = 2
#: Which replica answered (its index), for whoever looks into how the work was shared.
REPLICA_HEADER = b"x-agl-llm-replica"


class Balancer:
    """An ASGI app sending each request to the least busy of ``upstreams`` (base URLs like ``http://h:p``)."""

    def __init__(self, upstreams: list[str], *, read_timeout_s: float | None = None) -> None:
        if not upstreams:
            raise ValueError("a balancer needs at least one upstream")
        self.upstreams = [u.rstrip("/") for u in upstreams]
        self.in_flight = dict.fromkeys(self.upstreams, 0)
        self._turn = itertools.count()
        # A generation may take minutes on a busy CPU: no read deadline unless asked (the caller keeps its own).
        timeout = httpx.Timeout(connect=5.0, read=read_timeout_s, write=30.0, pool=None)
        self._http = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=None))

    def pick(self, affinity: bytes | None = None) -> str:
        """The upstream with the fewest requests in flight; ties taken in turn, so idle replicas share the work.

        With an ``affinity`` (a chat's system prompt), the replica it hashes to while that one is at most
        ``AFFINITY_SLACK`` requests busier than the least busy: llama.cpp reuses a slot's cached prompt prefix, so
        an agent type's requests kept on one replica skip evaluating their shared prefix again.
        """
        fewest = min(self.in_flight.values())
        if affinity is not None:
            preferred = self.upstreams[zlib.crc32(affinity) % len(self.upstreams)]
            if self.in_flight[preferred] <= fewest + AFFINITY_SLACK:
                return preferred
        tied = [u for u in self.upstreams if self.in_flight[u] == fewest]
        return tied[next(self._turn) % len(tied)]

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: llama.cpp serves none
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        upstream = self.pick(_affinity(scope["path"], body))
        url = upstream + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_HEADERS]
        self.in_flight[upstream] += 1
        try:
            request = self._http.build_request(scope["method"], url, headers=headers, content=bytes(body))
            try:
                answer = await self._http.send(request, stream=True)
            except httpx.HTTPError as e:
                await _bad_gateway(send, f"replica {upstream} unreachable: {type(e).__name__}")
                return
            try:
                await send({
                    "type": "http.response.start",
                    "status": answer.status_code,
                    "headers": [
                        *((k, v) for k, v in answer.headers.raw if k.lower() not in _ANSWER_SKIP),
                        (REPLICA_HEADER, str(self.upstreams.index(upstream)).encode()),
                    ],
                })  # fmt: skip
                async for chunk in answer.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except httpx.HTTPError:
                # The replica broke off mid-answer: the status is already sent, so the client sees a cut body.
                return
            finally:
                await answer.aclose()
        finally:
            self.in_flight[upstream] -= 1

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _affinity(path: str, body: bytes | bytearray) -> bytes | None:
    """A chat's system prompt (the prefix its agent type's requests share), if it has one."""
    if not path.endswith("/chat/completions"):
        return None
    try:
        messages = orjson.loads(body).get("messages")
        first = messages[0] if isinstance(messages, list) and messages else None
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(first, dict) or first.get("role") != "system":
        return None
    return orjson.dumps(first.get("content"))


async def _bad_gateway(send: Send, reason: str) -> None:
    body = json.dumps({"error": {"code": 502, "type": "unavailable_error", "message": reason}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 502, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
