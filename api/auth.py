"""Who is calling: a signed-in user (access token) or a machine client (service token).

Every router gets its callers through these dependencies: `CurrentUser`, `AdminUser`,
`require_service(scope)`, `require_admin_or_scope(scope)`, and `owned_or_404` for owner
routes. They are all `async def` and read what they need from the app's state, so
resolving them costs no hop to the thread pool (FastAPI runs every plain `def`
dependency there).

A user's access token is taken as things stand, not as they were when it was minted: its
session must not have ended (logout, a reused refresh token) and its roles are the user's
roles now, both as the sessions and users read models show them, asked at most once a
second per session (`Standings`).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from aggregates.errors import AuthenticationFailedError, NotFoundError, NotPermittedError
from api.tokens import AccessTokenRevokedError, AccessTokens
from projections.reads import ProjectionReads
from projections.sessions import SessionStanding, session_standing
from projections.users import UserRoles, roles_of_user
from runtime.settings import Settings

bearer = HTTPBearer(auto_error=False)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" or "service"
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)
    address: str = ""
    session_id: UUID | None = None
    """A user's token family (the access token's `sid`); None for a service."""

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.subject}"

    @property
    def is_admin(self) -> bool:
        return self.kind == "user" and "admin" in self.roles

    @property
    def user_id(self) -> UUID:
        if self.kind != "user":
            raise NotPermittedError("this needs a signed-in user")
        return UUID(self.subject)


def service_for(token: str, settings: Settings) -> Principal | None:
    """The service whose secret this is; every secret is compared, in constant time."""
    found: Principal | None = None
    presented = token.encode()
    for spec in settings.service_tokens:
        for secret in spec.secrets:
            if hmac.compare_digest(presented, secret.get_secret_value().encode()):
                found = Principal("service", spec.name, scopes=frozenset(spec.scopes))
    return found


async def get_access_tokens(request: Request) -> AccessTokens:
    tokens: AccessTokens = request.app.state.access_tokens
    return tokens


AccessTokensDep = Annotated[AccessTokens, Depends(get_access_tokens)]

VERIFIED_FOR = timedelta(seconds=1)
"""How long, on the service's clock, an access token verified once is taken again without
verifying it (the signature and JSON parsing are most of a small read's CPU): at most this
long past its expiry and leeway, then it is verified again and refused."""

VERIFIED_MAX = 4096
"""Tokens remembered at most; past that the memory starts again (each request verifies)."""


class VerifiedTokens:
    """The access tokens this app verified in the last `VERIFIED_FOR`, with their callers.
    One per app: its keys are the app's (`AccessTokens`)."""

    def __init__(self, tokens: AccessTokens) -> None:
        self.tokens = tokens
        self._seen: dict[str, tuple[Principal, datetime]] = {}

    def principal(self, token: str, now: datetime) -> Principal:
        seen = self._seen.get(token)
        if seen is not None and seen[1] <= now < seen[1] + VERIFIED_FOR:
            return seen[0]
        claims = self.tokens.verify(token, now)
        principal = Principal(
            "user",
            str(claims.user_id),
            roles=claims.roles,
            address=claims.address,
            session_id=claims.session_id,
        )
        if len(self._seen) >= VERIFIED_MAX:
            self._seen.clear()
        self._seen[token] = (principal, now)
        return principal


STANDING_FOR = timedelta(seconds=1)
"""How long, on the service's clock, what the read models said of a session and its user is
taken again without asking them. With the projections' lag, it is how late a logout, a
reused refresh token or a revoked role takes effect here; within it a busy caller costs no
query."""

STANDING_MAX = 4096
"""Sessions remembered at most; past that the memory starts again."""


@dataclass(frozen=True)
class Standing:
    """A session and its user as the read models showed them; None: not seen there yet."""

    session: SessionStanding | None
    user: UserRoles | None


class Standings:
    """Each signed-in caller's session and user as the read models show them, asked at most
    once per `STANDING_FOR` per session. One per app: the read pool is the app's."""

    def __init__(self, reads: ProjectionReads) -> None:
        self.reads = reads
        self._seen: dict[tuple[UUID, UUID], tuple[Standing, datetime]] = {}

    async def standing(self, user_id: UUID, session_id: UUID, now: datetime) -> Standing:
        key = (user_id, session_id)
        seen = self._seen.get(key)
        if seen is not None and seen[1] <= now < seen[1] + STANDING_FOR:
            return seen[0]
        session, user = await asyncio.gather(
            session_standing(self.reads, session_id), roles_of_user(self.reads, user_id)
        )
        standing = Standing(session, user)
        if len(self._seen) >= STANDING_MAX:
            self._seen.clear()
        self._seen[key] = (standing, now)
        return standing

    async def current(self, principal: Principal, settings: Settings, now: datetime) -> Principal:
        """The caller as things stand: refused when the read model shows its session ended,
        and with its user's roles as the read model holds them (a revoked role is gone as
        soon as it is projected; a role granted a moment ago waits for its projection).

        What the read models have not seen yet (a sign-in a moment ago) is not known to
        have ended: the token holds as minted until they have."""
        if principal.session_id is None:
            return principal
        standing = await self.standing(principal.user_id, principal.session_id, now)
        if standing.session is not None and standing.session.ended(now):
            raise AccessTokenRevokedError("the session of this access token has ended")
        if standing.user is None:
            return principal
        roles = effective_roles(standing.user.roles, standing.user.address, settings)
        return principal if roles == principal.roles else replace(principal, roles=roles)


def principal_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The caller: a user (access token, a JWT) or a service (service token), as the token
    alone says, with no query: `caller_of` also asks whether its session still stands."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationFailedError("a bearer token is required")
    state = request.app.state
    token = credentials.credentials
    if token.count(".") == 2:
        verified: VerifiedTokens = state.verified_tokens
        return verified.principal(token, state.clock())
    principal = service_for(token, state.services.settings)
    if principal is None:
        raise AuthenticationFailedError("the token is not valid")
    return principal


async def caller_of(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The caller as things stand now: `principal_of`, then, for a user, refused when its
    session has ended and given its user's current roles (`Standings`)."""
    principal = principal_of(request, credentials)
    if principal.session_id is None:
        return principal
    state = request.app.state
    standings: Standings = state.standings
    return await standings.current(principal, state.services.settings, state.clock())


# Each dependency below reads the bearer credentials itself rather than depending on
# `current_principal`: FastAPI resolves every level of a dependency tree on every request.


async def current_principal(request: Request, credentials: BearerDep) -> Principal:
    return await caller_of(request, credentials)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def current_user(request: Request, credentials: BearerDep) -> Principal:
    principal = await caller_of(request, credentials)
    if principal.kind != "user":
        raise NotPermittedError("this needs a signed-in user")
    return principal


async def admin_user(request: Request, credentials: BearerDep) -> Principal:
    user = await current_user(request, credentials)
    if not user.is_admin:
        raise NotPermittedError("this needs the admin role")
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]


def require_service(scope: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(request: Request, credentials: BearerDep) -> Principal:
        principal = await caller_of(request, credentials)
        if principal.kind != "service" or scope not in principal.scopes:
            raise NotPermittedError(f"this needs a service token with the {scope!r} scope")
        return principal

    return dependency


def require_admin_or_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(request: Request, credentials: BearerDep) -> Principal:
        principal = await caller_of(request, credentials)
        if not (principal.is_admin or scope in principal.scopes):
            raise NotPermittedError(f"this needs the admin role or the {scope!r} scope")
        return principal

    return dependency


def owned_or_404(owner_id: UUID | None, user: Principal, what: str) -> None:
    """Someone else's resource is answered exactly like a missing one; a caller that is
    not a user is refused before anything is looked at, so it learns nothing either."""
    caller = user.user_id
    if owner_id is None or owner_id != caller:
        raise NotFoundError(f"{what} not found")


def effective_roles(roles: list[str], address: str, settings: Settings) -> frozenset[str]:
    """Roles granted as events, plus admin for the addresses the operators configured."""
    admins = {a.lower() for a in settings.admin_addresses}
    return frozenset([*roles, *(["admin"] if address.lower() in admins else [])])
