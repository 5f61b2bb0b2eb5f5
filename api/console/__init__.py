"""The operator console at `/console` (issue 20, item 5): server-rendered pages (Jinja2 and
htmx, vendored: no build step), an admin signed in with SIWE, live over Server-Sent Events.

`install(app)` adds its routes, its static files and the answers to a visitor who is not
signed in (sent to the sign-in page) or not an admin (a refusal page, 403)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.console.routes import router
from api.console.session import (
    SIGN_IN_PATH,
    RefusedError,
    SignInRequiredError,
    csrf_token,
    is_htmx,
)
from api.console.signals import SignalWatch
from api.console.templating import HERE, templates
from api.problems import problem_response

__all__ = ["install", "router"]


def install(app: FastAPI) -> None:
    app.state.console_signals = SignalWatch(app.state.metrics.latency)
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(SignInRequiredError)
    async def sign_in_required(request: Request, _error: SignInRequiredError) -> Response:
        if is_htmx(request) or request.method != "GET":
            return problem_response(
                request,
                401,
                "unauthenticated",
                "sign in to the console",
                headers={"HX-Redirect": SIGN_IN_PATH},
            )
        return RedirectResponse(SIGN_IN_PATH, status_code=303)

    @app.exception_handler(RefusedError)
    async def refused(request: Request, error: RefusedError) -> Response:
        if is_htmx(request) or request.method != "GET":
            return problem_response(request, 403, "forbidden", error.detail)
        response: HTMLResponse = templates.TemplateResponse(
            request,
            "refused.html",
            {"csrf": csrf_token(request), "detail": error.detail},
            status_code=403,
        )
        return response
