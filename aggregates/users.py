"""A person, known by a wallet: registered on first sign-in, roles granted by admins."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from eth_utils import to_checksum_address
from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.errors import InvalidCommandError

ROLES = ("admin", "moderator")


def user_id_for(address: str) -> UUID:
    """One user per wallet: the id comes from the checksummed address."""
    return derive_id("User", to_checksum_address(address))


class UnknownRoleError(InvalidCommandError):
    code = "unknown-role"


class User(DomainAggregate):
    class Registered(DomainAggregate.Created):
        address: str

    class SignedIn(DomainAggregate.Event):
        session_id: UUID

    class RoleGranted(DomainAggregate.Event):
        role: str

    class RoleRevoked(DomainAggregate.Event):
        role: str

    @event(Registered)
    def __init__(self, id: UUID, address: str) -> None:
        self.address = address
        self.roles: list[str] = []
        self.sign_ins = 0

    @classmethod
    def register(cls, address: str) -> User:
        checksummed = to_checksum_address(address)
        return cls(id=user_id_for(checksummed), address=checksummed)

    def in_good_standing(self, now: datetime, min_age: timedelta) -> bool:
        """Whether this user's reports count towards hiding a profile: a moderator or admin,
        or a wallet that first signed in at least `min_age` ago (so a batch of fresh
        wallets cannot hide anyone's profile; its reports still reach the moderators)."""
        return bool(self.roles) or now - self.created_on >= min_age

    def record_sign_in(self, session_id: UUID) -> None:
        self._signed_in(session_id=session_id)

    def grant_role(self, role: str) -> None:
        self.check_role_known(role)
        if role not in self.roles:
            self._role_granted(role=role)

    def revoke_role(self, role: str) -> None:
        self.check_role_known(role)
        if role in self.roles:
            self._role_revoked(role=role)

    @staticmethod
    def check_role_known(role: str) -> None:
        if role not in ROLES:
            raise UnknownRoleError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")

    @event(SignedIn)
    def _signed_in(self, session_id: UUID) -> None:
        self.sign_ins += 1

    @event(RoleGranted)
    def _role_granted(self, role: str) -> None:
        self.roles = sorted({*self.roles, role})

    @event(RoleRevoked)
    def _role_revoked(self, role: str) -> None:
        self.roles = [r for r in self.roles if r != role]
