"""The FastAPI app: one router per area, problem+json errors, request ids, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import metrics
from api.problems import RESPONSES, install_problem_handlers
from api.rate_limit import RateLimiter
from api.request_id import RequestIdMiddleware
from api.routers import (
    admin_auditions,
    admin_economy,
    admin_moderation,
    admin_prop,
    admin_users,
    audit,
    auditions,
    auth,
    clones,
    economy,
    health,
    ingest,
    me,
    prop,
    public_profiles,
)
from api.tokens import AccessTokens
from runtime.clock import Clock, system_clock
from runtime.settings import Settings, get_settings
from services.bootstrap import Services, open_services

ROUTERS = [
    auth.router,
    me.router,
    clones.router,
    public_profiles.router,
    admin_moderation.router,
    admin_users.router,
    economy.router,
    admin_economy.router,
    prop.router,
    admin_prop.router,
    auditions.router,
    admin_auditions.router,
    audit.router,
    health.router,
    ingest.router,
    metrics.router,
]


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    clock: Clock = system_clock,
) -> FastAPI:
    """Build the app. Given `services`, it uses them and leaves closing them to the caller."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        opened = services or open_services(settings or get_settings())
        app.state.services = opened
        app.state.access_tokens = AccessTokens.from_settings(opened.settings)
        app.state.auth_limiter = RateLimiter(opened.settings.auth_rate_limit)
        app.state.metrics.watch(opened)
        await opened.reads.open()
        try:
            yield
        finally:
            await opened.reads.close()
            if owned:
                opened.close()

    app = FastAPI(
        title="Pump Party ledger",
        version="0.1.0",
        lifespan=lifespan,
        responses=RESPONSES,
    )
    app.state.clock = clock
    app.state.metrics = metrics.Metrics()
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)

    app.add_middleware(metrics.MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
