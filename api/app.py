"""The FastAPI app: one router per area, problem+json errors, request ids, metrics.

The request path is kept lean: four pure-ASGI middlewares of ours (the client's address
behind trusted proxies, request id, metrics, the body limit of `api.limits`)
inside FastAPI's own, `async def` dependencies (no thread-pool hop each), uvicorn's access
log off unless `PUMPPARTY_ACCESS_LOG` is set, and one watcher per process for
read-your-writes waits (`api.deps.ProjectionPositions`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import console, metrics
from api.auth import Standings, VerifiedTokens
from api.deps import close_positions, positions_of
from api.limits import BodyLimitMiddleware
from api.openapi import install_openapi
from api.problems import install_problem_handlers
from api.rate_limit import ClientAddressMiddleware, RateLimiter
from api.request_id import RequestIdMiddleware
from api.routers import (
    admin_arena,
    admin_auditions,
    admin_dead_letters,
    admin_economy,
    admin_moderation,
    admin_payouts,
    admin_prop,
    admin_races,
    admin_users,
    arena,
    audit,
    auditions,
    auth,
    clones,
    custody,
    economy,
    engine,
    generation,
    health,
    ingest,
    me,
    prop,
    public_profiles,
    races,
    stream,
    withdrawals,
)
from api.stream import Broadcaster
from api.tokens import AccessTokens
from runtime.clock import Clock, system_clock
from runtime.settings import Settings, get_settings
from services.bootstrap import Services, open_services

ROUTERS = [
    auth.router,
    me.router,
    clones.router,
    generation.router,
    engine.router,
    engine.jobs_router,
    engine.admin_router,
    public_profiles.router,
    admin_moderation.router,
    admin_users.router,
    economy.router,
    admin_economy.router,
    admin_economy.ledger_router,
    withdrawals.router,
    withdrawals.admin_router,
    custody.router,
    prop.router,
    admin_prop.router,
    auditions.router,
    admin_auditions.router,
    arena.router,
    admin_arena.router,
    races.router,
    admin_races.router,
    admin_payouts.router,
    admin_dead_letters.router,
    audit.router,
    health.router,
    ingest.router,
    metrics.router,
    stream.router,
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
        app.state.verified_tokens = VerifiedTokens(app.state.access_tokens)
        app.state.standings = Standings(opened.reads)
        app.state.auth_limiter = RateLimiter.for_settings(opened.settings, opened.datastore)
        app.state.trusted_proxies = opened.settings.trusted_proxies
        app.state.metrics.watch(opened)
        if not opened.settings.access_log:
            quiet_access_log()
        await opened.reads.open()
        positions_of(opened.reads)
        app.state.stream = Broadcaster(opened.reads)
        app.state.stream.start()
        try:
            yield
        finally:
            await app.state.stream.close()
            await close_positions(opened.reads)
            await opened.reads.close()
            if owned:
                opened.close()

    app = FastAPI(
        title="Pump Party ledger",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_openapi(app)
    app.state.clock = clock
    app.state.metrics = metrics.Metrics()
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    console.install(app)  # /console: HTML for operators, outside the API contract

    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(metrics.MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestIdMiddleware)
    # Outermost: the client's address (behind trusted proxies) is decided before anything.
    app.add_middleware(ClientAddressMiddleware, state=app.state)
    return app


def quiet_access_log() -> None:
    """What uvicorn does for `--no-access-log`: no handler and no propagation, so every
    connection opened from now on skips the access line (uvicorn asks `hasHandlers()` when
    it opens one). Done here too so the setting holds however uvicorn was started."""
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
