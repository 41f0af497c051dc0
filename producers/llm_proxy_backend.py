"""Where a proxied LLM call goes and whom it belongs to.

- **Attribution** reads the lifecycle write model (``lifecycle_rollouts`` / ``lifecycle_attempts``, the command
  API's own tables, so it knows a rollout the moment it is enqueued, with no projection lag), and takes the call's
  span sequence id from the rollout's counter in the same connection borrowing: one pool checkout, two short
  statements. The number is taken when the request starts, as Agent Lightning's proxy does, so concurrent calls
  of one attempt keep the order in which they were made.
- **The backend** is the ``llm`` resource (type ``llm``) of the rollout's resources: its pinned ``resources_id``
  (highest version), else the latest resources, read from the resources read model and cached for
  ``RESOURCES_CACHE_S``: a new version is seen within that, and a busy proxy asks PostgreSQL once per interval.
- **The backend's kind** decides which token-id options the proxy adds: vLLM accepts ``return_token_ids``
  (OpenAI itself rejects unknown fields, so it is never sent blindly); llama.cpp gives generated token ids only
  beside ``logprobs``. It is probed once per endpoint (llama.cpp answers ``GET /props``, vLLM ``GET /version``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx

from agl.llm import TEMPLATE_FIELDS, resolve_api_key
from core.errors import ConfigError, LightningError
from producers.idempotency import next_number
from projections.reading import reading
from projections.resources import PROJECTION as RESOURCES
from projections.resources import ResourcesVersion, get_resources, latest_resources
from schemas.resources import LLMResource

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from schemas._base import Json

BackendKind = Literal["llama.cpp", "vllm", "openai"]

#: How long a resolved backend is reused before the resources read model is asked again.
RESOURCES_CACHE_S = 2.0
#: How long the one-time probe of a backend's kind may take (a backend that does not answer is "openai").
PROBE_TIMEOUT_S = 3.0
#: The resource name the proxy forwards to, when the resources hold more than one ``llm``.
LLM_RESOURCE_NAME = "llm"


class ProxyRefused(LightningError):
    """The proxy cannot forward this call; ``http_status`` and ``error_type`` shape the OpenAI-style answer."""

    def __init__(self, http_status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_type = error_type


@dataclass(frozen=True)
class Attribution:
    rollout_id: str
    attempt_id: str
    sequence_id: int
    #: the rollout's pinned resources; ``None`` means the latest
    resources_id: str | None


@dataclass(frozen=True)
class Backend:
    """An OpenAI-compatible endpoint (base URL ending in ``/v1``) and what every call to it carries."""

    endpoint: str
    model: str
    api_key: str | None
    sampling: dict[str, Json]
    resources_id: str
    resources_version: int

    @property
    def server_root(self) -> str:
        """Where the server's own routes (/props, /version, /tokenize) sit: beside /v1, not under it."""
        return self.endpoint.rstrip("/").removesuffix("/v1")

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


async def attribute(pool: AsyncConnectionPool[Any], rollout_id: str, attempt_id: str | None) -> Attribution:
    """The call's rollout and attempt (the newest attempt when none is named) and its span sequence id.

    Raises:
        ProxyRefused: 404 for a rollout or attempt the write model does not know, 409 for a rollout not yet
            claimed (it has no attempt to record the call in).
    """
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT r.latest_attempt_id, a.attempt_id, r.resources_id FROM lifecycle_rollouts r"
            " LEFT JOIN lifecycle_attempts a ON a.rollout_id = r.rollout_id AND a.attempt_id = %s"
            " WHERE r.rollout_id = %s",
            (attempt_id, rollout_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise ProxyRefused(404, "not_found_error", f"unknown rollout {rollout_id!r}")
        latest, named, resources_id = row
        if attempt_id is not None and named is None:
            raise ProxyRefused(404, "not_found_error", f"rollout {rollout_id!r} has no attempt {attempt_id!r}")
        if attempt_id is None and latest is None:
            raise ProxyRefused(409, "conflict_error", f"rollout {rollout_id!r} has no attempt yet (not claimed)")
        sequence_id = await next_number(conn, "span_sequence", rollout_id)
    return Attribution(rollout_id, attempt_id or latest, sequence_id, resources_id)


class BackendDirectory:
    """Resolves a rollout's resources to a backend (cached briefly) and remembers each backend's kind."""

    def __init__(self, pool: AsyncConnectionPool[Any], http: httpx.AsyncClient) -> None:
        self._pool = pool
        self._http = http
        self._backends: dict[str | None, tuple[float, Backend]] = {}
        self._kinds: dict[str, BackendKind] = {}

    async def backend(self, resources_id: str | None) -> Backend:
        """The backend of a rollout's resources: ``resources_id`` (its highest version), else the latest."""
        cached = self._backends.get(resources_id)
        if cached is not None and time.monotonic() - cached[0] < RESOURCES_CACHE_S:
            return cached[1]
        async with self._pool.connection() as conn, reading(conn, RESOURCES):
            found = await (latest_resources(conn) if resources_id is None else get_resources(conn, resources_id))
        backend = _backend_of(found, resources_id)
        self._backends[resources_id] = (time.monotonic(), backend)
        return backend

    async def kind(self, backend: Backend) -> BackendKind:
        """llama.cpp, vLLM or another OpenAI-compatible server; probed once per endpoint."""
        known = self._kinds.get(backend.endpoint)
        if known is not None:
            return known
        kind: BackendKind = "openai"
        try:
            props = await self._http.get(
                f"{backend.server_root}/props", headers=backend.headers, timeout=PROBE_TIMEOUT_S
            )
            if props.status_code == 200 and "default_generation_settings" in _json_object(props):
                kind = "llama.cpp"
            else:
                version = await self._http.get(
                    f"{backend.server_root}/version", headers=backend.headers, timeout=PROBE_TIMEOUT_S
                )
                if version.status_code == 200 and "version" in _json_object(version):
                    kind = "vllm"
        except httpx.HTTPError:
            return kind  # not remembered: the backend may be starting; the call itself will say more
        self._kinds[backend.endpoint] = kind
        return kind

    async def llama_cpp_prompt_ids(self, backend: Backend, body: dict[str, Any]) -> list[int] | None:
        """The prompt's token ids as llama.cpp sees them (as ``agl.llm`` asks them); ``None`` if it cannot say."""
        try:
            if "messages" in body:
                template = {"messages": body["messages"], **{k: body[k] for k in TEMPLATE_FIELDS if k in body}}
                rendered = await self._http.post(
                    f"{backend.server_root}/apply-template", json=template, headers=backend.headers
                )
                text = rendered.raise_for_status().json()["prompt"]
            elif isinstance(body.get("prompt"), str):
                text = body["prompt"]
            else:
                return None
            tokens = await self._http.post(
                f"{backend.server_root}/tokenize",
                json={"content": text, "add_special": True, "parse_special": True},
                headers=backend.headers,
            )
            return [int(t) for t in tokens.raise_for_status().json()["tokens"]]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None


def _backend_of(found: ResourcesVersion | None, resources_id: str | None) -> Backend:
    if found is None:
        what = "no resources are published" if resources_id is None else f"resources {resources_id!r} are unknown"
        raise ProxyRefused(404, "not_found_error", f"the rollout's LLM is not known: {what}")
    llms = {name: r for name, r in found.resources.items() if r.get("resource_type") == "llm"}
    raw = llms.get(LLM_RESOURCE_NAME) or (next(iter(llms.values())) if len(llms) == 1 else None)
    where = f"resources {found.resources_id!r} version {found.resources_version}"
    if raw is None:
        raise ProxyRefused(
            404,
            "not_found_error",
            f"{where} has no resource of type llm to forward to (name one {LLM_RESOURCE_NAME!r}); "
            f"it has {sorted(found.resources)}",
        )
    resource = LLMResource.model_validate(raw)
    try:
        api_key = resolve_api_key(resource.api_key_ref)
    except ConfigError as e:
        raise ProxyRefused(502, "upstream_configuration_error", f"{where}: {e}") from e
    return Backend(
        endpoint=resource.endpoint.rstrip("/"),
        model=resource.model,
        api_key=api_key,
        sampling=dict(resource.sampling_parameters),
        resources_id=found.resources_id,
        resources_version=found.resources_version,
    )


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
