"""Who is at the console: the admin signed in with SIWE, held in cookies, and the CSRF check.

The sign-in page runs our API's own SIWE flow (`/v1/auth/nonce`, the wallet's
`personal_sign`, then `/console/session`, which verifies through the same code as
`/v1/auth/verify`). The tokens never reach page scripts: the access token is kept in an
HttpOnly, SameSite=Strict cookie (Secure over https), read back into a bearer credential
on every console request and checked by `api.auth.admin_user`, exactly as an admin API
route checks it, so a revoked role or an ended session shuts the console too.

The refresh token is kept likewise, but only so that signing out can end the session for
real (`identity.log_out`: the access token is then refused everywhere, not just forgotten
by this browser). It is never used to extend a console session: when the access token
runs out, the operator signs in again, so a console left open does not stay signed in.

CSRF: the cookies are SameSite=Strict, so no other site's page gets them sent; and every
POST must also carry the session's CSRF token in `X-Console-CSRF`, equal to the value of
the HttpOnly `console_csrf` cookie (a double submit). The page learns the token from the
server-rendered HTML; another origin can neither read it nor set that header without a
CORS preflight, which this app never grants.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from aggregates.errors import AuthenticationFailedError, NotPermittedError
from api.auth import Principal, admin_user
from api.problems import ApiError

ACCESS_COOKIE = "console_access"
REFRESH_COOKIE = "console_refresh"
CSRF_COOKIE = "console_csrf"
CSRF_HEADER = "X-Console-CSRF"
COOKIE_PATH = "/console"
SIGN_IN_PATH = "/console/sign-in"


class SignInRequiredError(Exception):
    """No console session, or one whose token no longer holds: sign in (again)."""


class RefusedError(Exception):
    """Signed in, but not an admin (or not a user at all)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class CsrfRejectedError(ApiError):
    status = 403
    code = "csrf-rejected"


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )


def clear_session(response: Response) -> None:
    for name in (ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path=COOKIE_PATH)


def csrf_token(request: Request) -> str:
    """The token this browser holds (the sign-in page hands one out before any session)."""
    return request.cookies.get(CSRF_COOKIE) or ""


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


async def check_csrf(request: Request) -> None:
    """A dependency of every console POST."""
    held = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER, "")
    if not held or not hmac.compare_digest(held.encode(), sent.encode()):
        raise CsrfRejectedError(f"the {CSRF_HEADER} header does not match this session's token")


async def console_admin(request: Request) -> Principal:
    """The admin at the console, checked like any admin API route's caller."""
    token = request.cookies.get(ACCESS_COOKIE)
    if not token:
        raise SignInRequiredError()
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    try:
        return await admin_user(request, credentials)
    except AuthenticationFailedError:
        raise SignInRequiredError() from None
    except NotPermittedError as refused:
        raise RefusedError(str(refused)) from None


ConsoleAdmin = Annotated[Principal, Depends(console_admin)]
