"""The FastAPI application factory and its lifespan (engine, token service, Temporal client)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import errors
from api.deps import AppState
from api.envelope import ErrorEnvelope
from api.events_bus import EventBus
from api.middleware import RequestContextMiddleware
from api.ratelimit import RateLimiter
from api.routers import (
    agents,
    auth,
    codec,
    collaborations,
    messages,
    monitoring,
    sandboxes,
    system,
    workspaces,
    ws,
)
from api.security import TokenService
from api.temporal import TemporalGateway
from config.settings import API_PREFIX, VERSION, Settings, get_settings
from store.db import create_engine, session_factory

log = logging.getLogger("aintandem.api")
SHUTDOWN_STEP_SECONDS = 10.0

_ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorEnvelope, "description": desc}
    for code, desc in {
        400: "Bad request",
        401: "Authentication required or failed",
        404: "Not found",
        409: "Conflict",
        422: "Validation error",
        429: "Rate limit exceeded",
        500: "Internal error",
        503: "A dependency (Temporal, the database) is unavailable; retry shortly",
    }.items()
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.resolved_database_url, settings.database_echo)
        sessions = session_factory(engine)
        bus = EventBus(settings, sessions)
        app.state.aintandem = AppState(
            settings=settings,
            sessions=sessions,
            tokens=TokenService(settings),
            limiter=RateLimiter(settings),
            temporal=TemporalGateway(settings),
            events=bus,
        )
        await bus.start()
        try:
            yield
        finally:
            # A shutdown must end: a stuck stream or a connection owned by another event loop
            # (seen under the fuzzing harness) is logged and left behind, not waited for.
            for what, step in (("event bus", bus.stop), ("database engine", engine.dispose)):
                try:
                    await asyncio.wait_for(step(), SHUTDOWN_STEP_SECONDS)
                except TimeoutError:
                    log.warning("shutdown: %s did not stop in %s s", what, SHUTDOWN_STEP_SECONDS)

    app = FastAPI(
        title="AInTandem API",
        version=VERSION,
        description="Teams of AI agents in isolated sandboxes, collaborating durably.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
        responses=_ERROR_RESPONSES,
    )
    errors.install(app)
    for router in (
        auth.router,
        workspaces.router,
        workspaces.config_router,
        sandboxes.router,
        sandboxes.config_router,
        messages.router,
        monitoring.router,
        agents.router,
        collaborations.router,
        system.router,
        codec.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(ws.router)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestContextMiddleware)
    return app
