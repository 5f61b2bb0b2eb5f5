"""Our routers: FastAPI's, with a `def` endpoint run in one thread hop instead of two, and
a request for another area's path turned away without trying each of the router's routes.

FastAPI runs a plain `def` endpoint in the thread pool and then validates its answer in a
second trip through the pool. A command's endpoint blocks on PostgreSQL, so it needs the
thread; validating its answer does not. `OneHopRoute` wraps such an endpoint in an
`async def` that awaits it in the thread pool, so FastAPI validates the answer on the event
loop. The wrapper keeps the endpoint's signature (`functools.wraps`), so its parameters and
dependencies, and the OpenAPI, are unchanged.

FastAPI tries the app's included routers one after another, and each tries every one of
its routes (twice: once to choose the router, once to handle). With thirty routers that
was a third of a command's time on the event loop. A router now answers "no match" at
once, with one string comparison, for a path that does not begin with the literal text
of any of its routes (each route's path up to its first parameter). A router without a
prefix (`/v1/me`, `/v1/users/...`) is turned away as cheaply as one with a prefix.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import fastapi
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match
from starlette.types import Scope


def is_plain_function(endpoint: Callable[..., Any]) -> bool:
    """Neither a coroutine nor a generator (FastAPI streams those itself)."""
    return not (
        inspect.iscoroutinefunction(endpoint)
        or inspect.isasyncgenfunction(endpoint)
        or inspect.isgeneratorfunction(endpoint)
    )


def in_thread_pool(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)
    async def awaited(*args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(endpoint, *args, **kwargs)

    return awaited


class OneHopRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if is_plain_function(endpoint):
            endpoint = in_thread_pool(endpoint)
        super().__init__(path, endpoint, **kwargs)


class APIRouter(fastapi.APIRouter):
    """Every router of the API: its routes are `OneHopRoute`s."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(route_class=OneHopRoute, **kwargs)
        self._literal_starts: tuple[int, tuple[str, ...]] = (-1, ())

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if not get_route_path(scope).startswith(self.literal_starts()):
            return Match.NONE, {}
        return super().matches(scope)

    def literal_starts(self) -> tuple[str, ...]:
        """The literal text each route's path begins with (up to its first parameter),
        without those another one begins with; worked out again whenever routes have been
        added."""
        counted, starts = self._literal_starts
        if counted != len(self.routes):
            found = sorted({getattr(route, "path", "").partition("{")[0] for route in self.routes})
            starts = tuple(
                start for n, start in enumerate(found) if not start.startswith(tuple(found[:n]))
            )
            self._literal_starts = (len(self.routes), starts)
        return starts
