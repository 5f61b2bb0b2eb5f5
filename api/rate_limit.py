"""Brute-force limits on sign-in routes, per client address and per wallet (429 + Retry-After),
and the one place that decides a request's client address.

The limits count in PostgreSQL by default (`runtime.rate_limits`), so every API process
(uvicorn workers, hosts behind a load balancer) draws on one budget per key; with
`PUMPPARTY_RATE_LIMIT_STORAGE=memory` each process keeps its own moving windows, which is
only right for a single API process (`pumpparty api --workers N` refuses it for N > 1).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, cast

from eventsourcing.postgres import PostgresDatastore
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.problems import RateLimitedError
from runtime import rate_limits
from runtime.settings import Settings

PRUNE_EVERY = 60.0
"""Seconds between one process's deletions of expired shared windows."""


class RateLimiter:
    """Windows per (route, kind, value): in PostgreSQL through `datastore`, shared by every
    process; without one, in this process's memory."""

    def __init__(self, spec: str, datastore: PostgresDatastore | None = None) -> None:
        self.limit = parse(spec)
        self.datastore = datastore
        self.memory = MovingWindowRateLimiter(MemoryStorage()) if datastore is None else None
        self._pruned_at: float | None = None
        self._prune_lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings, datastore: PostgresDatastore) -> RateLimiter:
        shared = settings.rate_limit_storage == "database"
        return cls(settings.auth_rate_limit, datastore if shared else None)

    def check(self, route: str, **keys: str) -> None:
        for kind, value in keys.items():
            if not value:
                continue
            retry_after = self._hit(route, kind, value.lower())
            if retry_after is not None:
                seconds = max(1, math.ceil(retry_after))
                raise RateLimitedError(
                    f"too many attempts from this {kind}; try again in {seconds}s",
                    headers={"Retry-After": str(seconds)},
                )

    def _hit(self, route: str, kind: str, value: str) -> float | None:
        """None if the hit is allowed (and counted), else seconds until one would be."""
        if self.memory is not None:
            if self.memory.hit(self.limit, route, kind, value):
                return None
            reset = self.memory.get_window_stats(self.limit, route, kind, value).reset_time
            return reset - time.time()
        assert self.datastore is not None
        with self.datastore.transaction(commit=True) as cursor:
            if self._prune_due():
                rate_limits.prune(cursor)
            hit = rate_limits.hit(
                cursor, f"{route}:{kind}:{value}", self.limit.amount, self.limit.get_expiry()
            )
        return None if hit.allowed else hit.retry_after

    def _prune_due(self) -> bool:
        now = time.monotonic()
        with self._prune_lock:
            if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
                return False
            self._pruned_at = now
            return True


class ClientAddressMiddleware:
    """Decides `request.client` once, for the limits and everything else (logs, metrics).

    The direct peer is the client, unless it is one of `PUMPPARTY_TRUSTED_PROXIES`: then
    the client is the rightmost X-Forwarded-For address that is not itself a trusted proxy
    (uvicorn's `ProxyHeadersMiddleware`, given our list; uvicorn's own copy, which trusts
    127.0.0.1 by default, is turned off where `pumpparty` starts uvicorn). The app's
    start-up puts the list in `state.trusted_proxies`; until then no peer is trusted."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state
        self._trusted: list[str] = []
        self._proxied = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxies: list[str] = getattr(self.state, "trusted_proxies", self._trusted)
        if proxies is not self._trusted:
            self._trusted = proxies
            self._proxied = (
                cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, self.app), trusted_hosts=proxies))
                if proxies
                else self.app
            )
        await self._proxied(scope, receive, send)
