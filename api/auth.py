"""Who is calling: a signed-in user (access token) or a machine client (service token).

Every router gets its callers through these dependencies: `CurrentUser`, `AdminUser`,
`require_service(scope)`, `require_admin_or_scope(scope)`, and `owned_or_404` for owner
routes.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from aggregates.errors import AuthenticationFailedError, NotFoundError, NotPermittedError
from api.deps import ClockDep, SettingsDep
from api.tokens import AccessTokens
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


def get_access_tokens(request: Request) -> AccessTokens:
    tokens: AccessTokens = request.app.state.access_tokens
    return tokens


AccessTokensDep = Annotated[AccessTokens, Depends(get_access_tokens)]


def current_principal(
    credentials: BearerDep, settings: SettingsDep, tokens: AccessTokensDep, clock: ClockDep
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationFailedError("a bearer token is required")
    token = credentials.credentials
    if token.count(".") == 2:
        claims = tokens.verify(token, clock())
        return Principal("user", str(claims.user_id), roles=claims.roles, address=claims.address)
    principal = service_for(token, settings)
    if principal is None:
        raise AuthenticationFailedError("the token is not valid")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def current_user(principal: PrincipalDep) -> Principal:
    if principal.kind != "user":
        raise NotPermittedError("this needs a signed-in user")
    return principal


def admin_user(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not user.is_admin:
        raise NotPermittedError("this needs the admin role")
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]


def require_service(scope: str) -> Callable[[Principal], Principal]:
    def dependency(principal: PrincipalDep) -> Principal:
        if principal.kind != "service" or scope not in principal.scopes:
            raise NotPermittedError(f"this needs a service token with the {scope!r} scope")
        return principal

    return dependency


def require_admin_or_scope(scope: str) -> Callable[[Principal], Principal]:
    def dependency(principal: PrincipalDep) -> Principal:
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
