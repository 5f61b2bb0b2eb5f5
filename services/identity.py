"""Identity commands: issue a nonce, sign in, refresh, log out, grant and revoke roles.

Token material never enters here: the edge makes the random secrets and passes their
hashes, and mints access tokens from what these commands return.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from aggregates.base import CommandContext, derive_id
from aggregates.errors import AuthenticationFailedError, NotFoundError
from aggregates.sessions import RefreshOutcome, Session
from aggregates.sign_in import NonceUnknownError, SignInNonce, nonce_id
from aggregates.users import User, user_id_for
from services.eventlog import EventLog, UnitOfWork, Written


class RefreshTokenRejectedError(AuthenticationFailedError):
    code = "refresh-token-invalid"


class RefreshTokenReusedError(AuthenticationFailedError):
    code = "refresh-token-reused"


@dataclass(frozen=True)
class SessionPolicy:
    refresh_ttl: timedelta
    lifetime: timedelta


@dataclass(frozen=True)
class SignedIn:
    user_id: UUID
    address: str
    roles: list[str]
    session_id: UUID
    first_sign_in: bool


def session_id_for(nonce: str) -> UUID:
    """Each nonce starts at most one family, so the family's id comes from it."""
    return derive_id("Session", nonce)


def issue_nonce(
    event_log: EventLog, context: CommandContext, nonce: str, address: str, expires_at: datetime
) -> Written[None]:
    def decide(unit: UnitOfWork) -> None:
        unit.add(SignInNonce(id=nonce_id(nonce), address=address, expires_at=expires_at))

    return event_log.execute(context, decide)


def sign_in(
    event_log: EventLog,
    context: CommandContext,
    *,
    nonce: str,
    address: str,
    refresh_token_hash: str,
    policy: SessionPolicy,
) -> Written[SignedIn]:
    """Consume the nonce, register the user if new, and start a token family, at once."""
    now = context.occurred_at

    def decide(unit: UnitOfWork) -> SignedIn:
        issued = unit.find(SignInNonce, nonce_id(nonce))
        if issued is None:
            raise NonceUnknownError("this nonce was not issued by this service")
        issued.consume(address, now)
        user = unit.find(User, user_id_for(address))
        first = user is None
        if user is None:
            user = unit.add(User.register(address))
        session = unit.add(
            Session.start(
                id=session_id_for(nonce),
                user_id=user.id,
                token_hash=refresh_token_hash,
                now=now,
                ttl=policy.refresh_ttl,
                lifetime=policy.lifetime,
            )
        )
        user.record_sign_in(session.id)
        return SignedIn(user.id, user.address, list(user.roles), session.id, first)

    return event_log.execute(context, decide)


def refresh(
    event_log: EventLog,
    context: CommandContext,
    *,
    session_id: UUID,
    presented_hash: str,
    new_hash: str,
    policy: SessionPolicy,
) -> Written[SignedIn]:
    """Rotate the family's token. A reused token revokes the family; that is saved first."""

    def decide(unit: UnitOfWork) -> tuple[RefreshOutcome, SignedIn | None]:
        session = unit.find(Session, session_id)
        if session is None:
            return RefreshOutcome.UNKNOWN, None
        outcome = session.refresh(presented_hash, new_hash, context.occurred_at, policy.refresh_ttl)
        user = unit.get(User, session.user_id)
        return outcome, SignedIn(user.id, user.address, list(user.roles), session.id, False)

    written = event_log.execute(context, decide)
    outcome, signed_in = written.result
    if outcome is RefreshOutcome.REUSED:
        raise RefreshTokenReusedError("this refresh token was already used; the session is revoked")
    if outcome is not RefreshOutcome.ROTATED or signed_in is None:
        raise RefreshTokenRejectedError(f"the refresh token is not valid ({outcome.value})")
    return Written(signed_in, written.position)


def log_out(
    event_log: EventLog, context: CommandContext, *, session_id: UUID, presented_hash: str
) -> Written[None]:
    """Revoke the family a refresh token belongs to (any token it ever issued will do)."""

    def decide(unit: UnitOfWork) -> None:
        session = unit.find(Session, session_id)
        if session is None or not session.issued(presented_hash):
            raise RefreshTokenRejectedError("the refresh token is not valid (unknown)")
        session.revoke("logout")

    return event_log.execute(context, decide)


def revoke_session(
    event_log: EventLog,
    context: CommandContext,
    *,
    session_id: UUID,
    owner_id: UUID | None,
    reason: str,
) -> Written[None]:
    """Revoke a family; with `owner_id`, only its owner may (anyone else sees no session)."""

    def decide(unit: UnitOfWork) -> None:
        session = unit.get(Session, session_id)
        if owner_id is not None and session.user_id != owner_id:
            raise NotFoundError(f"Session {session_id} not found")
        session.revoke(reason)

    return event_log.execute(context, decide)


def grant_role(
    event_log: EventLog, context: CommandContext, user_id: UUID, role: str
) -> Written[list[str]]:
    def decide(unit: UnitOfWork) -> list[str]:
        user = unit.get(User, user_id)
        user.grant_role(role)
        return list(user.roles)

    return event_log.execute(context, decide)


def revoke_role(
    event_log: EventLog, context: CommandContext, user_id: UUID, role: str
) -> Written[list[str]]:
    def decide(unit: UnitOfWork) -> list[str]:
        user = unit.get(User, user_id)
        user.revoke_role(role)
        return list(user.roles)

    return event_log.execute(context, decide)
