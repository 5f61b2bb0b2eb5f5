"""Access tokens (JWT, HS256 only, keys named by `kid`) and opaque refresh tokens.

RFC 8725: the algorithm is fixed, never taken from the header; `typ` is `at+jwt`; `aud`
and `iss` are set and checked; an unknown `kid` is refused. Previous secrets still
verify, so a new secret can be rolled out while old tokens run out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import jwt

from aggregates.errors import AuthenticationFailedError
from runtime.private_files import kept_secret
from runtime.settings import Settings

ALGORITHM = "HS256"
TOKEN_TYPE = "at+jwt"
LEEWAY = timedelta(seconds=5)


class AccessTokenInvalidError(AuthenticationFailedError):
    code = "access-token-invalid"


class AccessTokenExpiredError(AuthenticationFailedError):
    code = "access-token-expired"


class AccessTokenRevokedError(AuthenticationFailedError):
    """Well signed and unexpired, but its session has ended (logout, a reused refresh token,
    revoked by its owner, past its lifetime): refreshing cannot help, only a new sign-in."""

    code = "access-token-revoked"


@dataclass(frozen=True)
class AccessClaims:
    user_id: UUID
    address: str
    roles: frozenset[str]
    session_id: UUID


def key_id(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()[:16]


def signing_secrets(settings: Settings) -> list[bytes]:
    """The current secret first. Without one configured, a random one kept in the data dir."""
    if settings.jwt_secret is not None:
        current = settings.jwt_secret.get_secret_value().encode()
    else:
        current = kept_secret(settings.data_dir / "jwt-secret")
    return [current, *(s.get_secret_value().encode() for s in settings.jwt_previous_secrets)]


class AccessTokens:
    def __init__(
        self, secrets_: list[bytes], *, issuer: str, audience: str, ttl: timedelta
    ) -> None:
        self.keys = {key_id(secret): secret for secret in secrets_}
        self.current_kid = key_id(secrets_[0])
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessTokens:
        return cls(
            signing_secrets(settings),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl=timedelta(seconds=settings.access_token_ttl),
        )

    def mint(self, claims: AccessClaims, now: datetime) -> str:
        payload = {
            "sub": str(claims.user_id),
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(now.timestamp()),
            "exp": int((now + self.ttl).timestamp()),
            "jti": str(uuid.uuid4()),
            "sid": str(claims.session_id),
            "address": claims.address,
            "roles": sorted(claims.roles),
        }
        headers = {"kid": self.current_kid, "typ": TOKEN_TYPE}
        return jwt.encode(
            payload, self.keys[self.current_kid], algorithm=ALGORITHM, headers=headers
        )

    def verify(self, token: str, now: datetime) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AccessTokenInvalidError("the access token is malformed") from None
        secret = self.keys.get(str(header.get("kid")))
        if secret is None or header.get("typ") != TOKEN_TYPE:
            raise AccessTokenInvalidError("the access token was not issued by this service")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                # Expiry is checked below against the service's clock, not the host's.
                options={
                    "require": ["sub", "iss", "aud", "iat", "exp", "jti", "sid"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
            if (
                not isinstance(payload["exp"], int)
                or now.timestamp() >= payload["exp"] + LEEWAY.total_seconds()
            ):
                raise AccessTokenExpiredError("the access token has expired")
            return AccessClaims(
                user_id=UUID(payload["sub"]),
                address=str(payload.get("address", "")),
                roles=frozenset(str(r) for r in payload.get("roles", [])),
                session_id=UUID(payload["sid"]),
            )
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise AccessTokenInvalidError("the access token is not valid") from None


def new_refresh_token(session_id: UUID) -> str:
    """The family's id (to find it) and 256 random bits (the secret), opaque to clients."""
    return base64.urlsafe_b64encode(session_id.bytes + secrets.token_bytes(32)).decode().rstrip("=")


def refresh_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_of(token: str) -> UUID | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    return UUID(bytes=raw[:16]) if len(raw) == 48 else None
