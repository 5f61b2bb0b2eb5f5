"""A refresh-token family, started by one sign-in (RFC 9700 rotation with reuse detection).

Only hashes of refresh tokens are kept. Each refresh retires the presented token and
makes a new one current; a retired token presented again means it leaked, so the whole
family is revoked and the reuse recorded.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate


class RefreshOutcome(StrEnum):
    ROTATED = "rotated"
    REUSED = "reused"
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


class Session(DomainAggregate):
    # Long-lived families rotate often; snapshots keep their load cost flat.
    snapshot_interval: ClassVar[int | None] = 50

    class Started(DomainAggregate.Created):
        user_id: UUID
        token_hash: str
        refresh_expires_at: datetime
        absolute_expires_at: datetime

    class Rotated(DomainAggregate.Event):
        retired_hash: str
        token_hash: str
        refresh_expires_at: datetime

    class ReuseDetected(DomainAggregate.Event):
        presented_hash: str

    class Revoked(DomainAggregate.Event):
        reason: str

    @event(Started)
    def __init__(
        self,
        id: UUID,
        user_id: UUID,
        token_hash: str,
        refresh_expires_at: datetime,
        absolute_expires_at: datetime,
    ) -> None:
        self.user_id = user_id
        self.current_hash = token_hash
        self.retired_hashes: list[str] = []
        self.refresh_expires_at = refresh_expires_at
        self.absolute_expires_at = absolute_expires_at
        self.revoked_reason: str | None = None

    @classmethod
    def start(
        cls,
        id: UUID,
        user_id: UUID,
        token_hash: str,
        now: datetime,
        ttl: timedelta,
        lifetime: timedelta,
    ) -> Session:
        absolute = now + lifetime
        return cls(
            id=id,
            user_id=user_id,
            token_hash=token_hash,
            refresh_expires_at=min(now + ttl, absolute),
            absolute_expires_at=absolute,
        )

    @property
    def is_active(self) -> bool:
        return self.revoked_reason is None

    def refresh(
        self, presented_hash: str, new_hash: str, now: datetime, ttl: timedelta
    ) -> RefreshOutcome:
        if not self.is_active:
            return RefreshOutcome.REVOKED
        if presented_hash in self.retired_hashes:
            self._reuse_detected(presented_hash=presented_hash)
            self._revoked(reason="refresh-token-reuse")
            return RefreshOutcome.REUSED
        if presented_hash != self.current_hash:
            return RefreshOutcome.UNKNOWN
        if now >= self.refresh_expires_at:
            return RefreshOutcome.EXPIRED
        self._rotated(
            retired_hash=presented_hash,
            token_hash=new_hash,
            refresh_expires_at=min(now + ttl, self.absolute_expires_at),
        )
        return RefreshOutcome.ROTATED

    def issued(self, token_hash: str) -> bool:
        return token_hash == self.current_hash or token_hash in self.retired_hashes

    def revoke(self, reason: str) -> None:
        if self.is_active:
            self._revoked(reason=reason)

    @event(Rotated)
    def _rotated(self, retired_hash: str, token_hash: str, refresh_expires_at: datetime) -> None:
        self.retired_hashes.append(retired_hash)
        self.current_hash = token_hash
        self.refresh_expires_at = refresh_expires_at

    @event(ReuseDetected)
    def _reuse_detected(self, presented_hash: str) -> None:
        pass

    @event(Revoked)
    def _revoked(self, reason: str) -> None:
        self.revoked_reason = reason
