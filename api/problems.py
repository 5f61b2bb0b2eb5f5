"""Every error leaves as RFC 9457 problem+json with a stable `type`.

Domain errors are raised by the domain and mapped here once, by their base class; the
API's own failures (authentication, a projection still behind) are raised as `ApiError`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from aggregates.errors import (
    AuthenticationFailedError,
    ConflictError,
    DomainError,
    InvalidCommandError,
    NotFoundError,
    NotPermittedError,
    PaymentRequiredError,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "/problems/"


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
    errors_omitted: int | None = None
    """How many more faults there were than `errors` lists (it lists `MAX_ERRORS` at most)."""


MAX_ERRORS = 50
"""The most faults a problem lists; the rest are only counted (`errors_omitted`), so a body
with thousands of bad fields cannot make an answer many times its size."""


class ApiError(Exception):
    status = 400
    code = "bad-request"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if headers is not None:
            self.headers = headers


class RateLimitedError(ApiError):
    status = 429
    code = "rate-limited"


class ProjectionBehindError(ApiError):
    status = 503
    code = "projection-behind"
    headers = {"Retry-After": "1"}


class PositionBeyondHeadError(ApiError):
    """`min_position` (or `X-Min-Position`) names a log position not written yet: no wait
    could reach it, so it is refused at once rather than held until the read timeout."""

    status = 409
    code = "position-beyond-head"


class TooManyWaitsError(ApiError):
    """More reads are waiting for a position in this process than `read_wait_limit`."""

    status = 503
    code = "too-many-waits"
    headers = {"Retry-After": "1"}


_DOMAIN_STATUS: list[tuple[type[DomainError], int]] = [
    (AuthenticationFailedError, 401),
    (PaymentRequiredError, 402),
    (NotPermittedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidCommandError, 422),
]

_HTTP_CODES = {
    400: "malformed-body",  # FastAPI's "error parsing the body" (e.g. not UTF-8)
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",  # also the body limit's (api/limits.py)
    415: "unsupported-media-type",
}


def problem_response(
    request: Request,
    status: int,
    code: str,
    detail: str | None,
    *,
    errors: list[dict[str, Any]] | None = None,
    total_errors: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """`total_errors`: how many faults there were, when `errors` lists only some."""
    omitted = None
    if errors is not None:
        total = max(total_errors or 0, len(errors))
        errors = errors[:MAX_ERRORS]
        omitted = (total - len(errors)) or None
    problem = Problem(
        type=TYPE_PREFIX + code,
        title=code.replace("-", " ").capitalize(),
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
        errors_omitted=omitted,
    )
    return Response(
        orjson.dumps(problem.model_dump(exclude_none=True)),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


HTTP_METHODS = ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")


def allowed_methods(request: Request) -> list[str]:
    """Every method the app serves at the request's path. Starlette's 405 names the methods
    of the first route whose path matched, but one path's methods may be spread over
    several routes (`GET` and `POST /v1/clones` are two), and `Allow` must list them all:
    each method is tried against the app's routes as a request of its own would be."""
    path, root_path = request.scope["path"], request.scope.get("root_path", "")
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({"type": "http", "path": path, "root_path": root_path, "method": method})[
                0
            ]
            is Match.FULL
            for route in routes
        )
    ]


def status_of(error: DomainError) -> int:
    for cls, status in _DOMAIN_STATUS:
        if isinstance(error, cls):
            return status
    return 400


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, error: DomainError) -> Response:
        status = status_of(error)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        # A domain error may name each fault (e.g. strategy-graph guardrails, by JSON pointer).
        errors = getattr(error, "problem_errors", None)
        return problem_response(
            request, status, error.code, str(error), errors=errors, headers=headers
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return problem_response(
            request, error.status, error.code, error.detail, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        faults = error.errors()
        errors = [
            {
                "loc": [str(part) for part in e.get("loc", ())],
                "msg": e.get("msg"),
                "type": e.get("type"),
            }
            for e in faults[:MAX_ERRORS]
        ]
        return problem_response(
            request,
            422,
            "invalid-request",
            "the request is not valid",
            errors=errors,
            total_errors=len(faults),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(error.status_code, "http-error")
        headers = dict(error.headers) if error.headers else None
        if error.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return problem_response(
            request, error.status_code, code, str(error.detail), headers=headers
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "internal-error", "an unexpected error occurred")
