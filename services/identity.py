"""Identity commands: issue a nonce, sign in, refresh, log out, grant and revoke roles.

Token material never enters here: the edge makes the random secrets and passes their
hashes, and mints access tokens from what these commands return.

Nonces are working state, not the record: a row in `sign_in_nonces` (schema step 13) with
an expiry, so an anonymous request appends nothing to the log and takes no log lock. The
sign-in is the auditable event. Verify claims the row with one conditional UPDATE (of two
concurrent claims exactly one gets it) before the sign-in is recorded, and the session's id
is derived from the nonce, so the log itself refuses a second sign-in with one nonce in the
same transaction that records the first. A claimed nonce is never released: a sign-in
that fails after the claim needs a new nonce (fail closed). `PruneSignInNonces` deletes
expired rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.postgres import PostgresDatastore

from aggregates.base import CommandContext, derive_id
from aggregates.errors import AuthenticationFailedError, NotFoundError
from aggregates.sessions import RefreshOutcome, Session
from aggregates.sign_in import NonceExpiredError, NonceUnknownError, NonceUsedError
from aggregates.users import User, user_id_for
from runtime.clock import Clock
from services.eventlog import EventLog, UnitOfWork, Written

log = logging.getLogger(__name__)

NONCE_PRUNE_JOB = "sign_in_nonce_prune"


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


def _datastore(event_log: EventLog) -> PostgresDatastore:
    datastore: PostgresDatastore = event_log.recorder.datastore  # type: ignore[attr-defined]
    return datastore


def issue_nonce(
    event_log: EventLog, nonce: str, address: str, issued_at: datetime, expires_at: datetime
) -> None:
    """Keep a nonce for `address` until `expires_at`: a row, no event."""
    with _datastore(event_log).transaction(commit=True) as cursor:
        cursor.execute(
            "INSERT INTO sign_in_nonces (nonce, address, issued_at, expires_at)"
            " VALUES (%s, %s, %s, %s)",
            (nonce, address, issued_at, expires_at),
        )


def claim_nonce(event_log: EventLog, nonce: str, address: str, now: datetime) -> None:
    """Mark the nonce used, once: of any number of concurrent claims exactly one succeeds.

    Unknown, issued to another wallet (left untouched), already used or expired: 401."""
    with _datastore(event_log).transaction(commit=True) as cursor:
        cursor.execute(
            "UPDATE sign_in_nonces SET consumed_at = %s WHERE nonce = %s AND address = %s"
            " AND consumed_at IS NULL AND expires_at > %s RETURNING nonce",
            (now, nonce, address, now),
        )
        if cursor.fetchone() is not None:
            return
        cursor.execute(
            "SELECT address, expires_at, consumed_at FROM sign_in_nonces WHERE nonce = %s",
            (nonce,),
        )
        row: dict[str, Any] | None = cursor.fetchone()
    if row is None or row["address"] != address:
        raise NonceUnknownError("this nonce was not issued by this service for this wallet")
    if row["consumed_at"] is not None:
        raise NonceUsedError("this nonce was already used")
    raise NonceExpiredError("this nonce has expired; ask for a new one")


def prune_nonces(event_log: EventLog, now: datetime) -> int:
    """Delete the nonces that expired before `now` (used or not); return how many."""
    with _datastore(event_log).transaction(commit=True) as cursor:
        cursor.execute("DELETE FROM sign_in_nonces WHERE expires_at <= %s", (now,))
        return cursor.rowcount


@dataclass(frozen=True)
class PruneSignInNonces:
    """A scheduled job: expired nonces leave the table (they can sign nothing in)."""

    event_log: EventLog
    clock: Clock

    def __call__(self) -> int:
        pruned = prune_nonces(self.event_log, self.clock())
        if pruned:
            log.info("pruned %d expired sign-in nonces", pruned)
        return pruned


def sign_in(
    event_log: EventLog,
    context: CommandContext,
    *,
    nonce: str,
    address: str,
    refresh_token_hash: str,
    policy: SessionPolicy,
) -> Written[SignedIn]:
    """Claim the nonce, then register the user if new and start a token family, at once.

    The family's id comes from the nonce, so a second sign-in with it is refused by the
    log in the transaction that records the first, even if the claim were bypassed."""
    now = context.occurred_at
    claim_nonce(event_log, nonce, address, now)

    def decide(unit: UnitOfWork) -> SignedIn:
        if unit.find(Session, session_id_for(nonce)) is not None:
            raise NonceUsedError("this nonce was already used")
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
