"""The operator console's routes: pages, panel fragments, operator actions, the live stream.

Thin like every router: reads go through `api.console.panels`, actions through
`services.dead_letters` (a projection's stall is a dead letter there: skip is its discard,
resume its replay, each an event with the admin and the reason). None of it is in the
OpenAPI document: the console is HTML for people, not part of the API contract.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, Path, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from aggregates.base import CommandContext
from aggregates.errors import InvalidCommandError, NotFoundError
from api.auth import AccessTokensDep, Principal
from api.console.panels import PANELS, Console, fingerprints
from api.console.session import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    REFRESH_COOKIE,
    SIGN_IN_PATH,
    ConsoleAdmin,
    RefusedError,
    SignInRequiredError,
    check_csrf,
    clear_session,
    console_admin,
    csrf_token,
    is_htmx,
    new_csrf_token,
    set_cookie,
)
from api.console.signals import SignalWatch
from api.console.templating import templates
from api.deps import ClockDep, EventLogDep, SettingsDep, clock_of, command_context, services_of
from api.routers import auth as auth_routes
from api.routers.auth import LimiterDep, RefreshCreate, SignInCreate
from api.routing import APIRouter
from api.stream import Broadcaster
from runtime.clock import Clock
from services import dead_letters
from services.bootstrap import Services
from services.dead_letters import DeadLetterView, stall_letter_id
from services.identity import RefreshTokenRejectedError

router = APIRouter(prefix="/console", include_in_schema=False)

LOOK_SECONDS = 1.0
"""How often the live stream looks for changes on behalf of one open console."""

TICK_LOOKS = 15
"""Every this many looks the stream sends `tick` (every panel refreshes: ages move) and
checks again that the session is still an admin's."""

REASON_MAX = 500


class PanelUnknownError(NotFoundError):
    code = "console-panel-not-found"


class ReasonRequiredError(InvalidCommandError):
    code = "reason-required"


def console_of(request: Request) -> Console:
    signals: SignalWatch = request.app.state.console_signals
    return Console(services_of(request), clock_of(request), signals)


async def reason_of(request: Request) -> str:
    """The `reason` of a form post (urlencoded: what htmx sends), required and bounded."""
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    reason = (form.get("reason") or [""])[0].strip()
    if not reason:
        raise ReasonRequiredError("a reason is required")
    if len(reason) > REASON_MAX:
        raise ReasonRequiredError(f"a reason is at most {REASON_MAX} characters")
    return reason


async def panel_html(request: Request, name: str, **extra: Any) -> str:
    title, load = PANELS[name]
    shown = await load(console_of(request))
    template = templates.get_template(f"panels/{name.replace('-', '_')}.html")
    return template.render(request=request, panel=name, title=title, **shown, **extra)


async def fragment(request: Request, name: str, notice: str | None = None) -> HTMLResponse:
    return HTMLResponse(await panel_html(request, name, notice=notice))


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, template, {"csrf": csrf_token(request), **context}, status_code=status
    )


# --- signing in and out --------------------------------------------------------------------


@router.get("/sign-in")
async def sign_in_page(request: Request) -> HTMLResponse:
    token = csrf_token(request) or new_csrf_token()
    response = templates.TemplateResponse(request, "sign_in.html", {"csrf": token})
    set_cookie(request, response, CSRF_COOKIE, token, max_age=24 * 3600)
    return response


@router.post("/session", dependencies=[Depends(check_csrf)])
def open_session(
    body: SignInCreate,
    request: Request,
    event_log: EventLogDep,
    settings: SettingsDep,
    clock: ClockDep,
    tokens: AccessTokensDep,
    limiter: LimiterDep,
) -> JSONResponse:
    """The SIWE verify of `/v1/auth/verify`, its tokens kept in cookies, never in the page."""
    issued = auth_routes.verify(body, request, event_log, settings, clock, tokens, limiter)
    response = JSONResponse({"next": "/console", "roles": issued.user.roles})
    set_cookie(request, response, ACCESS_COOKIE, issued.access_token, issued.expires_in)
    set_cookie(request, response, REFRESH_COOKIE, issued.refresh_token, issued.expires_in)
    # A new session gets a new CSRF token: one handed out before sign-in is not reused.
    set_cookie(request, response, CSRF_COOKIE, new_csrf_token(), max_age=issued.expires_in)
    return response


@router.post("/sign-out", dependencies=[Depends(check_csrf)])
def sign_out(
    request: Request, event_log: EventLogDep, clock: ClockDep, limiter: LimiterDep
) -> Response:
    """End the session itself (its access token is then refused everywhere), not only this
    browser's cookies; a refresh token already rejected still signs this browser out."""
    refresh_token = request.cookies.get(REFRESH_COOKIE)
    if refresh_token:
        with contextlib.suppress(RefreshTokenRejectedError):
            auth_routes.logout(
                RefreshCreate(refresh_token=refresh_token), request, event_log, clock, limiter
            )
    response: Response
    if is_htmx(request):
        response = Response(status_code=204, headers={"HX-Redirect": SIGN_IN_PATH})
    else:
        response = RedirectResponse(SIGN_IN_PATH, status_code=303)
    clear_session(response)
    return response


# --- pages and panels ----------------------------------------------------------------------


@router.get("")
async def console_page(request: Request, admin: ConsoleAdmin) -> HTMLResponse:
    panels = [(name, title, await panel_html(request, name)) for name, (title, _) in PANELS.items()]
    return page(request, "console.html", admin=admin, panels=panels, only=None)


@router.get("/panels/{name}")
async def panel(request: Request, name: str, _admin: ConsoleAdmin) -> HTMLResponse:
    if name not in PANELS:
        raise PanelUnknownError(f"no console panel named {name!r}")
    return await fragment(request, name)


@router.get("/events", response_class=EventSourceResponse)
async def events(request: Request, _admin: ConsoleAdmin) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events naming each panel whose content changed (its name is the event),
    and `tick` now and then; the page fetches those panels again. Ends when the session no
    longer holds an admin (the page's next fetch then goes to the sign-in page) or the
    process stops."""
    console = console_of(request)
    broadcaster: Broadcaster = request.app.state.stream
    yield ServerSentEvent(comment="console open", retry=2000)
    seen = await fingerprints(console)
    looks = 0
    while not broadcaster.stopping:
        await asyncio.sleep(LOOK_SECONDS)
        looks += 1
        if looks % TICK_LOOKS == 0:
            try:
                await console_admin(request)
            except (SignInRequiredError, RefusedError):
                return
            yield ServerSentEvent(event="tick", raw_data="")
        now = await fingerprints(console)
        for name, mark in now.items():
            if seen.get(name) != mark:
                yield ServerSentEvent(event=name, raw_data=name)
        seen = now


@router.get("/{name}")
async def one_panel_page(
    request: Request, name: Annotated[str, Path(max_length=40)], admin: ConsoleAdmin
) -> HTMLResponse:
    """A page with one panel alone (the nav's links)."""
    if name not in PANELS:
        raise PanelUnknownError(f"no console panel named {name!r}")
    title = PANELS[name][0]
    panels = [(name, title, await panel_html(request, name))]
    return page(request, "console.html", admin=admin, panels=panels, only=name)


# --- operator actions ----------------------------------------------------------------------


Decision = Callable[[Services, CommandContext, str, str], DeadLetterView]


async def decide(
    request: Request, admin: Principal, clock: Clock, decision: Decision, letter_id: str
) -> DeadLetterView:
    """An operator's decision on a dead letter, with the reason the form sent: an event
    with the admin and that reason (`services/dead_letters.py`)."""
    reason = await reason_of(request)
    context = command_context(admin.actor, clock)
    return await run_in_threadpool(decision, services_of(request), context, letter_id, reason)


@router.post("/projections/{name}/skip", dependencies=[Depends(check_csrf)])
async def skip_projection(
    request: Request,
    name: Annotated[str, Path(max_length=100)],
    admin: ConsoleAdmin,
    clock: ClockDep,
) -> HTMLResponse:
    """Step the projection over the event it stalled on. Done as the discard of its dead
    letter, so the decision is an event with the admin and the reason, not just a row."""
    letter = await decide(
        request, admin, clock, dead_letters.discard_dead_letter, stall_letter_id(name)
    )
    return await fragment(request, "projections", f"{name}: skipped {letter.subject}")


@router.post("/projections/{name}/resume", dependencies=[Depends(check_csrf)])
async def resume_projection(
    request: Request,
    name: Annotated[str, Path(max_length=100)],
    admin: ConsoleAdmin,
    clock: ClockDep,
) -> HTMLResponse:
    """Clear the stall so the runner tries the same event again (after a fix): the replay
    of its dead letter, recorded likewise."""
    letter = await decide(
        request, admin, clock, dead_letters.replay_dead_letter, stall_letter_id(name)
    )
    return await fragment(request, "projections", f"{name}: retrying {letter.subject}")


@router.post("/dead-letters/{letter_id}/replay", dependencies=[Depends(check_csrf)])
async def replay_letter(
    request: Request,
    letter_id: Annotated[str, Path(max_length=200)],
    admin: ConsoleAdmin,
    clock: ClockDep,
) -> HTMLResponse:
    letter = await decide(request, admin, clock, dead_letters.replay_dead_letter, letter_id)
    return await fragment(request, "dead-letters", f"{letter.kind} {letter.id}: {letter.state}")


@router.post("/dead-letters/{letter_id}/discard", dependencies=[Depends(check_csrf)])
async def discard_letter(
    request: Request,
    letter_id: Annotated[str, Path(max_length=200)],
    admin: ConsoleAdmin,
    clock: ClockDep,
) -> HTMLResponse:
    letter = await decide(request, admin, clock, dead_letters.discard_dead_letter, letter_id)
    return await fragment(request, "dead-letters", f"{letter.kind} {letter.id}: {letter.state}")
