"""A small OpenAI-compatible chat client for agents: ``LLMClient`` (blocking) and ``AsyncLLMClient``.

``chat(messages, **sampling)`` answers a :class:`ChatResult` with the content, finish reason, usage and response
id, plus the token ids of the prompt and of the completion when the endpoint gives them, which is what training
needs. llama.cpp's server gives them (``logprobs: true`` carries each generated token's id; ``/apply-template``
then ``/tokenize`` give the prompt's ids). Other endpoints leave them ``None``; that is not an error.

Connection errors and 502/503/504 answers are retried with backoff, a bounded number of times, then raised as
:class:`agl.errors.LLMUnavailable` (retriable). There is no fallback reply: a rollout whose LLM is down fails.

Inside a traced attempt each call is recorded as an ``openai.chat.completion`` span with its messages, token ids
and logprobs (``agl.llm_span``), so an agent need not build that span itself. Through our API's LLM proxy, which
records the call whole (prompt ids and logprobs too), the client neither asks the proxy for the prompt's ids nor
copies the logprobs into its own span: the triplet adapter counts the two spans of one response id as one call and
takes what the client's lacks from the proxy's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import httpx

from agl.errors import ConfigError, LLMError, LLMUnavailable
from agl.llm_span import llm_call
from core.tls import default_ssl_context
from producers.auth.discovery import find_api_key
from producers.client import RetryPolicy
from producers.llm_proxy_span import SPAN_ID_HEADER

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

    from schemas.resources import LLMResource, ProxyLLMResource

#: Answers worth a retry: a proxy or a server that is starting or overloaded.
RETRIABLE_STATUS = frozenset({502, 503, 504})
#: Request fields that change how the chat template renders the prompt, so /apply-template needs them too.
TEMPLATE_FIELDS = ("tools", "tool_choice", "chat_template_kwargs", "add_generation_prompt")


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class ChatResult:
    """One chat completion. Token ids are ``None`` when the endpoint does not give them.

    ``completion_token_ids`` includes the end-of-turn token when ``finish_reason`` is ``"stop"`` (llama.cpp
    reports it), so it has ``usage.completion_tokens`` ids.
    """

    content: str | None
    finish_reason: str | None
    usage: Usage | None
    response_id: str | None
    model: str | None
    completion_token_ids: tuple[int, ...] | None = None
    completion_logprobs: tuple[float, ...] | None = None
    prompt_token_ids: tuple[int, ...] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: The call's span when the attempt is traced (``agl.emit_reward(r, link=result)`` rewards this call).
    span_id: str | None = None


def resolve_api_key(api_key_ref: str | None) -> str | None:
    """The key a reference names: ``env:NAME`` reads the environment variable NAME. Keys never go in events."""
    if api_key_ref is None:
        return None
    kind, _, name = api_key_ref.partition(":")
    if kind != "env" or not name:
        raise ConfigError(f"unsupported api_key_ref {api_key_ref!r}; use env:VARIABLE_NAME")
    if name not in os.environ:
        raise ConfigError(f"api_key_ref {api_key_ref!r}: the environment variable {name} is not set")
    return os.environ[name]


def _parse(raw: Mapping[str, Any]) -> ChatResult:
    try:
        choice = raw["choices"][0]
        message = choice.get("message") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        raise LLMError(f"not a chat completion: {str(raw)[:300]}") from None
    usage = raw.get("usage")
    entries = (choice.get("logprobs") or {}).get("content")
    ids = logprobs = None
    # llama.cpp puts each token's id beside its logprob; OpenAI and vLLM do not, and then there are no ids.
    if entries and all(isinstance(e, dict) and isinstance(e.get("id"), int) for e in entries):
        ids = tuple(e["id"] for e in entries)
        logprobs = tuple(float(e["logprob"]) for e in entries)
    return ChatResult(
        content=message.get("content"),
        finish_reason=choice.get("finish_reason"),
        usage=None if not usage else Usage(usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]),
        response_id=raw.get("id"),
        model=raw.get("model"),
        completion_token_ids=ids,
        completion_logprobs=logprobs,
        raw=raw,
    )


def _is_llama_cpp(raw: Mapping[str, Any]) -> bool:
    """llama.cpp's server adds ``timings`` to every completion; only it has /apply-template and /tokenize."""
    return isinstance(raw.get("timings"), dict)


def _rejected(response: httpx.Response) -> LLMError:
    return LLMError(f"the LLM answered {response.status_code}: {response.text[:300]}")


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        sampling: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        token_ids: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.sampling = dict(sampling or {})
        self.retry = retry or RetryPolicy()
        self.token_ids = token_ids
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}

    @classmethod
    def from_resource(
        cls, resource: LLMResource | ProxyLLMResource, *, rollout_id: str | None = None,
        attempt_id: str | None = None, **options: Any,
    ) -> Self:  # fmt: skip
        """A client for a published ``llm`` resource (its sampling parameters become the defaults).

        A ``proxy_llm`` resource is routed per attempt, so it needs ``rollout_id`` and ``attempt_id``.
        """
        endpoint = resource.endpoint
        if resource.resource_type == "proxy_llm":
            if rollout_id is None or attempt_id is None:
                raise ConfigError("a proxy_llm resource needs rollout_id and attempt_id")
            endpoint = resource.routed_endpoint(rollout_id, attempt_id)
            if resource.api_key_ref is None:
                # Our own API's proxy: it wants our API key (AGL_API_KEY or the one `agl up` saved).
                options.setdefault("api_key", find_api_key())
        options.setdefault("api_key", resolve_api_key(resource.api_key_ref))
        options.setdefault("sampling", resource.sampling_parameters)
        return cls(endpoint, model=resource.model, **options)

    @property
    def server_root(self) -> str:
        """The server's own routes (/tokenize, /apply-template) sit beside /v1, not under it."""
        return self.base_url.removesuffix("/v1")

    def _body(self, messages: Sequence[Mapping[str, Any]], sampling: Mapping[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, **self.sampling, **sampling, "messages": list(messages)}
        if self.token_ids and "logprobs" not in body:
            # llama.cpp gives a generated token's id only beside its logprob, and 20 alternatives per token unless
            # told otherwise; 1 is its least that still carries the ids (OpenAI accepts it too).
            body["logprobs"] = True
            body.setdefault("top_logprobs", 1)
        return body

    def _template_body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"messages": body["messages"], **{k: body[k] for k in TEMPLATE_FIELDS if k in body}}

    def _unavailable(self, last: object) -> LLMUnavailable:
        return LLMUnavailable(
            f"POST {self.base_url}/chat/completions: no answer after {self.retry.attempts} attempts ({last})"
        )


class AsyncLLMClient(_Base):
    """An OpenAI-compatible chat endpoint, asynchronously. ``async with`` it, or call ``aclose()``."""

    def __init__(self, base_url: str, *, model: str, timeout_s: float = 120.0, **options: Any) -> None:
        super().__init__(base_url, model=model, **options)
        self._http = httpx.AsyncClient(timeout=timeout_s, headers=self._headers, verify=default_ssl_context())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def chat(self, messages: Sequence[Mapping[str, Any]], **sampling: Any) -> ChatResult:
        """One chat completion; ``sampling`` (temperature, max_tokens, seed, stop...) overrides the defaults.

        Raises:
            LLMUnavailable: no answer (or 5xx) through the retry budget; retriable.
            LLMError: the endpoint refused the request (4xx).
        """
        body = self._body(messages, sampling)
        with llm_call(body) as call:  # the call's span, when the attempt is traced
            raw, proxied = await self._post_chat(body)
            result = _parse(raw)
            if self.token_ids and _is_llama_cpp(raw) and not proxied:
                ids = await self._prompt_ids(self._template_body(body))
                result = dataclasses.replace(result, prompt_token_ids=ids)
            return call.finish(result, proxied=proxied)

    async def _post_chat(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        last: object = None
        for attempt in range(1, self.retry.attempts + 1):
            try:
                response = await self._http.post(f"{self.base_url}/chat/completions", json=body)
            except httpx.TransportError as e:
                last = repr(e)
            else:
                if response.status_code not in RETRIABLE_STATUS:
                    if response.status_code >= 400:
                        raise _rejected(response)
                    answer: dict[str, Any] = response.json()
                    return answer, SPAN_ID_HEADER in response.headers
                last = f"{response.status_code} {response.text[:200]}"
            if attempt < self.retry.attempts:
                await asyncio.sleep(self.retry.delay(attempt))
        raise self._unavailable(last)

    async def _prompt_ids(self, template_body: Mapping[str, Any]) -> tuple[int, ...] | None:
        """The prompt's token ids as llama.cpp saw them; ``None`` if it cannot say (the chat itself succeeded)."""
        try:
            rendered = await self._http.post(f"{self.server_root}/apply-template", json=template_body)
            tokens = await self._http.post(
                f"{self.server_root}/tokenize",
                json={
                    "content": rendered.raise_for_status().json()["prompt"],
                    "add_special": True,
                    "parse_special": True,
                },
            )
            return tuple(int(t) for t in tokens.raise_for_status().json()["tokens"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None


class LLMClient(_Base):
    """An OpenAI-compatible chat endpoint, blocking: the same as :class:`AsyncLLMClient`, for scripts."""

    def __init__(self, base_url: str, *, model: str, timeout_s: float = 120.0, **options: Any) -> None:
        super().__init__(base_url, model=model, **options)
        self._http = httpx.Client(timeout=timeout_s, headers=self._headers, verify=default_ssl_context())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def chat(self, messages: Sequence[Mapping[str, Any]], **sampling: Any) -> ChatResult:
        """See :meth:`AsyncLLMClient.chat`."""
        body = self._body(messages, sampling)
        with llm_call(body) as call:
            raw, proxied = self._post_chat(body)
            result = _parse(raw)
            if self.token_ids and _is_llama_cpp(raw) and not proxied:
                ids = self._prompt_ids(self._template_body(body))
                result = dataclasses.replace(result, prompt_token_ids=ids)
            return call.finish(result, proxied=proxied)

    def _post_chat(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        last: object = None
        for attempt in range(1, self.retry.attempts + 1):
            try:
                response = self._http.post(f"{self.base_url}/chat/completions", json=body)
            except httpx.TransportError as e:
                last = repr(e)
            else:
                if response.status_code not in RETRIABLE_STATUS:
                    if response.status_code >= 400:
                        raise _rejected(response)
                    answer: dict[str, Any] = response.json()
                    return answer, SPAN_ID_HEADER in response.headers
                last = f"{response.status_code} {response.text[:200]}"
            if attempt < self.retry.attempts:
                time.sleep(self.retry.delay(attempt))
        raise self._unavailable(last)

    def _prompt_ids(self, template_body: Mapping[str, Any]) -> tuple[int, ...] | None:
        try:
            rendered = self._http.post(f"{self.server_root}/apply-template", json=template_body)
            tokens = self._http.post(
                f"{self.server_root}/tokenize",
                json={
                    "content": rendered.raise_for_status().json()["prompt"],
                    "add_special": True,
                    "parse_special": True,
                },
            )
            return tuple(int(t) for t in tokens.raise_for_status().json()["tokens"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
