"""Who is calling: service tokens for machine clients (user tokens join with identity)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SettingsDep
from api.problems import AuthenticationError, PermissionDeniedError
from runtime.settings import Settings

bearer = HTTPBearer(auto_error=False)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" or "service"
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.subject}"

    @property
    def is_admin(self) -> bool:
        return self.kind == "user" and "admin" in self.roles


def service_for(token: str, settings: Settings) -> Principal | None:
    """The service whose secret this is; every secret is compared, in constant time."""
    found: Principal | None = None
    presented = token.encode()
    for spec in settings.service_tokens:
        for secret in spec.secrets:
            if hmac.compare_digest(presented, secret.get_secret_value().encode()):
                found = Principal("service", spec.name, scopes=frozenset(spec.scopes))
    return found


def current_principal(credentials: BearerDep, settings: SettingsDep) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError("a bearer token is required")
    principal = service_for(credentials.credentials, settings)
    if principal is None:
        raise AuthenticationError("the token is not valid")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_service(scope: str) -> Callable[[Principal], Principal]:
    def dependency(principal: PrincipalDep) -> Principal:
        if principal.kind != "service" or scope not in principal.scopes:
            raise PermissionDeniedError(f"this needs a service token with the {scope!r} scope")
        return principal

    return dependency


def require_admin_or_scope(scope: str) -> Callable[[Principal], Principal]:
    def dependency(principal: PrincipalDep) -> Principal:
        if not (principal.is_admin or scope in principal.scopes):
            raise PermissionDeniedError(f"this needs the admin role or the {scope!r} scope")
        return principal

    return dependency
