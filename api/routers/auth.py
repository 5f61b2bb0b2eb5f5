"""Wallet sign-in (SIWE), token refresh with rotation, and logout."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated

from eth_utils import is_address, to_checksum_address
from fastapi import Depends, Request
from pydantic import BaseModel, Field, field_validator

from aggregates.sign_in import (
    MAX_MESSAGE_LENGTH,
    SiweExpectations,
    check_message,
    sign_in_message,
)
from api.auth import AccessTokensDep, effective_roles
from api.deps import ClockDep, EventLogDep, SettingsDep, command_context
from api.rate_limit import RateLimiter
from api.routing import APIRouter
from api.schemas import WrittenPublic
from api.tokens import AccessClaims, new_refresh_token, refresh_token_hash, session_of
from runtime.settings import Settings
from services import identity
from services.identity import RefreshTokenRejectedError, SessionPolicy, SignedIn

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class NonceCreate(BaseModel):
    address: str = Field(max_length=64, description="the wallet address (0x + 40 hex)")

    @field_validator("address")
    @classmethod
    def checksum(cls, value: str) -> str:
        if not is_address(value):
            raise ValueError("not an Ethereum address")
        return to_checksum_address(value)


class NoncePublic(BaseModel):
    nonce: str
    issued_at: str
    expires_at: str
    message: str


class SignInCreate(BaseModel):
    message: str = Field(
        min_length=1,
        max_length=MAX_MESSAGE_LENGTH,
        description="the message from /v1/auth/nonce, as signed (longer ones are refused unread)",
    )
    signature: str = Field(min_length=1, max_length=256)


class RefreshCreate(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=256)


class SignedInUserPublic(BaseModel):
    id: str
    address: str
    roles: list[str]


class TokensPublic(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    user: SignedInUserPublic
    position: int


def get_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.auth_limiter
    return limiter


LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]


def client_address(request: Request) -> str:
    """What the limits key on: the client as `api.rate_limit.ClientAddressMiddleware`
    decided it (the peer, or behind a trusted proxy the forwarded client); never a header
    read here."""
    return request.client.host if request.client else "unknown"


def expectations(settings: Settings) -> SiweExpectations:
    return SiweExpectations(
        domain=settings.siwe_domain,
        uri=settings.siwe_uri,
        chain_id=settings.chain_id,
        max_age=timedelta(seconds=settings.nonce_ttl),
    )


def policy(settings: Settings) -> SessionPolicy:
    return SessionPolicy(
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl),
        lifetime=timedelta(seconds=settings.session_lifetime),
    )


def issue_tokens(
    signed_in: SignedIn,
    refresh_token: str,
    position: int,
    settings: Settings,
    tokens: AccessTokensDep,
    clock: ClockDep,
) -> TokensPublic:
    roles = effective_roles(signed_in.roles, signed_in.address, settings)
    claims = AccessClaims(signed_in.user_id, signed_in.address, roles, signed_in.session_id)
    return TokensPublic(
        access_token=tokens.mint(claims, clock()),
        refresh_token=refresh_token,
        expires_in=int(tokens.ttl.total_seconds()),
        user=SignedInUserPublic(
            id=str(signed_in.user_id), address=signed_in.address, roles=sorted(roles)
        ),
        position=position,
    )


@router.post("/nonce", status_code=201, operation_id="auth_nonce")
def create_nonce(
    body: NonceCreate,
    request: Request,
    event_log: EventLogDep,
    settings: SettingsDep,
    clock: ClockDep,
    limiter: LimiterDep,
) -> NoncePublic:
    """A single-use nonce kept until it expires (no event: the sign-in is the record).

    Limited per client address only: a limit per wallet would let anyone keep someone
    else's wallet from signing in."""
    limiter.check("nonce", ip=client_address(request))
    now = clock().replace(microsecond=0)
    expires_at = now + timedelta(seconds=settings.nonce_ttl)
    nonce = secrets.token_hex(16)
    identity.issue_nonce(event_log, nonce, body.address, now, expires_at)
    return NoncePublic(
        nonce=nonce,
        issued_at=now.isoformat(),
        expires_at=expires_at.isoformat(),
        message=sign_in_message(expectations(settings), body.address, nonce, now, expires_at),
    )


@router.post("/verify", operation_id="auth_verify")
def verify(
    body: SignInCreate,
    request: Request,
    event_log: EventLogDep,
    settings: SettingsDep,
    clock: ClockDep,
    tokens: AccessTokensDep,
    limiter: LimiterDep,
) -> TokensPublic:
    limiter.check("verify", ip=client_address(request))
    checked = check_message(body.message, body.signature, expectations(settings), clock())
    limiter.check("verify", wallet=checked.address)
    refresh_token = new_refresh_token(identity.session_id_for(checked.nonce))
    written = identity.sign_in(
        event_log,
        command_context(f"wallet:{checked.address}", clock),
        nonce=checked.nonce,
        address=checked.address,
        refresh_token_hash=refresh_token_hash(refresh_token),
        policy=policy(settings),
    )
    return issue_tokens(written.result, refresh_token, written.position, settings, tokens, clock)


@router.post("/refresh", operation_id="auth_refresh")
def refresh(
    body: RefreshCreate,
    request: Request,
    event_log: EventLogDep,
    settings: SettingsDep,
    clock: ClockDep,
    tokens: AccessTokensDep,
    limiter: LimiterDep,
) -> TokensPublic:
    session_id = session_of(body.refresh_token)
    limiter.check("refresh", ip=client_address(request), session=str(session_id or ""))
    if session_id is None:
        raise RefreshTokenRejectedError("the refresh token is not valid (unknown)")
    new_token = new_refresh_token(session_id)
    written = identity.refresh(
        event_log,
        command_context(f"session:{session_id}", clock),
        session_id=session_id,
        presented_hash=refresh_token_hash(body.refresh_token),
        new_hash=refresh_token_hash(new_token),
        policy=policy(settings),
    )
    return issue_tokens(written.result, new_token, written.position, settings, tokens, clock)


@router.post("/logout", operation_id="auth_logout")
def logout(
    body: RefreshCreate,
    request: Request,
    event_log: EventLogDep,
    clock: ClockDep,
    limiter: LimiterDep,
) -> WrittenPublic:
    session_id = session_of(body.refresh_token)
    limiter.check("logout", ip=client_address(request))
    if session_id is None:
        raise RefreshTokenRejectedError("the refresh token is not valid (unknown)")
    written = identity.log_out(
        event_log,
        command_context(f"session:{session_id}", clock),
        session_id=session_id,
        presented_hash=refresh_token_hash(body.refresh_token),
    )
    return WrittenPublic(position=written.position)
