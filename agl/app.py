"""The FastAPI application factory. Routers of every room are mounted here; settings come in explicitly."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaClient
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from agl.dashboard import router as dashboard_router
from agl.error_answers import document_error_answers
from agl.errors import LightningError
from agl.observability import install_observability
from agl.observability.readiness import ReadinessCache
from agl.router import router_for
from consumers.routes import router as projections_router
from consumers.routes import stalled_projections
from core.pg_session import configure_session
from knowledge.routes import router as context_router
from producers.agl_compat import mount_agl_compat
from producers.api import mount_commands, running_commands
from producers.auth.keys import migrate_api_keys
from producers.auth.middleware import ApiKeyAuth
from producers.llm_proxy import router as llm_proxy_router
from producers.llm_proxy import running_llm_proxy
from producers.rate_limit import RateLimit, parse_limits
from producers.url_limit import UrlLimit
from projections.applied import AppliedListener
from projections.routes.agents import router as agents_router
from projections.routes.history import router as history_router
from projections.routes.knowledge import memory_router
from projections.routes.knowledge import router as knowledge_router
from projections.routes.resources import router as resources_router
from projections.routes.rollouts import router as rollouts_router
from projections.routes.router import router as assignment_router
from projections.routes.spans import router as spans_router
from projections.routes.triplets import router as triplets_router
from projections.routes.workers import router as workers_router

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from agl.config import Settings


#: What a 503 answer asks a client to wait before retrying, in seconds.
RETRY_AFTER_S = 1


def _install_error_answers(app: FastAPI) -> None:
    """Our errors answer their ``http_status``; a 503 always says when to come back (Retry-After)."""

    @app.exception_handler(LightningError)
    async def _lightning_error(_: Request, exc: LightningError) -> JSONResponse:
        status = getattr(exc, "http_status", None) or (503 if exc.retriable else 400)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(_: Request, exc: PoolTimeout) -> JSONResponse:
        # Every PostgreSQL connection is busy: a client should come back shortly, not see a server error.
        detail = f"the service is busy (no database connection free: {exc}); retry shortly"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def _readiness_checks(request: Request) -> dict[str, str]:
    """PostgreSQL, the broker, then (both up) whether a projection is stalled."""
    checks: dict[str, str] = {}
    try:
        async with request.app.state.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
        checks["postgres"] = "up"
    except Exception as e:  # noqa: BLE001 - any failure means "not ready", reported as such
        checks["postgres"] = f"down: {e}"
    try:
        await request.app.state.kafka.fetch_all_metadata()
        checks["kafka"] = "up"
    except Exception as e:  # noqa: BLE001
        checks["kafka"] = f"down: {e}"
    if checks["postgres"] == checks["kafka"] == "up":
        try:
            stalled = await stalled_projections(request)
            checks["projections"] = f"stalled: {'; '.join(stalled)}" if stalled else "up"
        except Exception as e:  # noqa: BLE001
            checks["projections"] = f"unknown: {e}"
    return checks


def create_app(settings: Settings) -> FastAPI:
    """Build the API. The lifespan opens the PostgreSQL pool and a Kafka client and closes them on exit."""
    if not settings.database_url or not settings.kafka_bootstrap:
        raise LightningError("the API needs AGL_DATABASE_URL and AGL_KAFKA_BOOTSTRAP (`agl up` sets both)")
    database_url, bootstrap = settings.database_url, settings.kafka_bootstrap
    rate_limits = parse_limits(settings.rate_limits)  # a malformed setting stops the start, not a request

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                database_url,
                min_size=1,
                max_size=settings.api_pool_size,
                timeout=settings.api_pool_timeout_s,
                open=False,
                kwargs={"autocommit": True},
                configure=configure_session,
            )
            await pool.open()
            stack.push_async_callback(pool.close)
            if settings.auth == "keys":
                async with pool.connection() as conn:
                    await migrate_api_keys(conn)  # the keys' table exists before the first request is checked
            kafka = AIOKafkaClient(bootstrap_servers=bootstrap)
            await kafka.bootstrap()
            stack.push_async_callback(kafka.close)
            await stack.enter_async_context(running_commands(app, settings, pool))
            await stack.enter_async_context(running_llm_proxy(app, settings, pool))
            app.state.applied = await stack.enter_async_context(AppliedListener(database_url))
            app.state.settings = settings
            app.state.pool = pool
            app.state.kafka = kafka
            yield

    app = FastAPI(title="Agent Lightning ES", version="0.1.0", lifespan=lifespan)

    _install_error_answers(app)
    app.state.router = router_for(settings)  # no I/O here: it reads its state at its first decision

    mount_commands(app, settings)
    read_routers = (
        rollouts_router, spans_router, history_router, resources_router, workers_router, agents_router, triplets_router,
    )  # fmt: skip
    for router in (*read_routers, knowledge_router, memory_router, context_router, projections_router):
        app.include_router(router)
    app.include_router(assignment_router)
    app.include_router(llm_proxy_router)
    mount_agl_compat(app)  # Agent Lightning's v0.3 store API under /v1/agl and its v0.1 task routes at the root
    app.include_router(dashboard_router)
    # Added after the command middlewares, so they run before them: a refused request is not even read.
    app.add_middleware(RateLimit, limits=rate_limits)
    # Before the rate limit: buckets are then kept for verified keys only, never for forged ones.
    app.add_middleware(ApiKeyAuth, mode=settings.auth)
    app.add_middleware(UrlLimit, max_bytes=settings.api_max_url_bytes)
    document_error_answers(
        app, keys=settings.auth == "keys"
    )  # last: it sees every route and the components the others added
    install_observability(app, settings)
    readiness = app.state.readiness = ReadinessCache()

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: PostgreSQL and the broker answer, and no projection is stalled (lag without progress).
        One round of checks a second serves every probe."""
        checks = await readiness.get(lambda: _readiness_checks(request))
        ready = all(v == "up" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    return app
