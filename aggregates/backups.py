"""The deployment's backup checks: every restore check of a backup is an event here.

One aggregate for the whole deployment (its id comes from a fixed key): `Verified` when a
dump restored into a scratch cluster and its hash chain matched what was recorded at dump
time, `Failed` with the stage and the reason otherwise. The alert "backup not verified in
26 h" and the `pumpparty_backup_*` gauges read its state.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.errors import InvalidCommandError

BACKUP_CHECKS_ID = derive_id("BackupChecks", "deployment")


class CheckStage(StrEnum):
    """Where a check stopped, in the order a check runs."""

    DUMP = "dump"
    """pg_dump itself failed (the daily job, before anything could be checked)."""
    MANIFEST = "manifest"
    """The record written beside the dump is missing or unreadable."""
    CHECKSUM = "checksum"
    """The dump is not the file that was written: truncated, extended or edited."""
    ARCHIVE = "archive"
    """`pg_restore --list` cannot read it, or it holds no log."""
    RESTORE = "restore"
    """Restoring it into the scratch cluster failed."""
    CHAIN = "chain"
    """The restored log fails `audit verify`."""
    HEAD = "head"
    """The restored log verifies but is not the log recorded at dump time."""


class BackupCheckInvalidError(InvalidCommandError):
    code = "backup-check-invalid"


class BackupChecks(DomainAggregate):
    snapshot_interval: ClassVar[int | None] = 100

    class Opened(DomainAggregate.Created):
        pass

    class Verified(DomainAggregate.Event):
        backup_id: UUID
        file: str
        sha256: str
        taken_at: datetime
        head_position: int
        head_hash: str
        events: int
        checked_at: datetime
        duration_ms: int

    class Failed(DomainAggregate.Event):
        backup_id: UUID | None
        file: str
        stage: str
        reason: str
        checked_at: datetime

    @event(Opened)
    def __init__(self, id: UUID) -> None:
        self.last_verified_at: datetime | None = None
        self.last_verified_file: str | None = None
        self.last_verified_head: int | None = None
        self.last_failed_at: datetime | None = None
        self.last_failure: str | None = None
        self.last_ok: bool | None = None
        self.consecutive_failures = 0
        self.verified_count = 0
        self.failed_count = 0

    @classmethod
    def open(cls) -> BackupChecks:
        return cls(id=BACKUP_CHECKS_ID)

    def verify(
        self,
        *,
        backup_id: UUID,
        file: str,
        sha256: str,
        taken_at: datetime,
        head_position: int,
        head_hash: str,
        events: int,
        checked_at: datetime,
        duration_ms: int,
    ) -> None:
        """A dump restored and its log matched its manifest."""
        if len(sha256) != 64 or not file:
            raise BackupCheckInvalidError("a verified backup names its file and its SHA-256")
        if head_position < 0 or events < 0 or duration_ms < 0 or events > head_position:
            raise BackupCheckInvalidError("a verified backup's head and counts are not negative")
        if taken_at > checked_at:
            raise BackupCheckInvalidError("a backup is checked after it was taken")
        self._verified(
            backup_id=backup_id,
            file=file,
            sha256=sha256,
            taken_at=taken_at,
            head_position=head_position,
            head_hash=head_hash,
            events=events,
            checked_at=checked_at,
            duration_ms=duration_ms,
        )

    @event(Verified)
    def _verified(
        self,
        backup_id: UUID,
        file: str,
        sha256: str,
        taken_at: datetime,
        head_position: int,
        head_hash: str,
        events: int,
        checked_at: datetime,
        duration_ms: int,
    ) -> None:
        self.last_verified_at = checked_at
        self.last_verified_file = file
        self.last_verified_head = head_position
        self.last_ok = True
        self.consecutive_failures = 0
        self.verified_count += 1

    def fail(
        self,
        *,
        backup_id: UUID | None,
        file: str,
        stage: CheckStage,
        reason: str,
        checked_at: datetime,
    ) -> None:
        """A check that did not get a backup to a verified restore, and why."""
        if not reason.strip():
            raise BackupCheckInvalidError("a failed check says why")
        self._failed(
            backup_id=backup_id,
            file=file,
            stage=CheckStage(stage).value,
            reason=reason[:2000],
            checked_at=checked_at,
        )

    @event(Failed)
    def _failed(
        self, backup_id: UUID | None, file: str, stage: str, reason: str, checked_at: datetime
    ) -> None:
        self.last_failed_at = checked_at
        self.last_failure = f"{stage}: {reason}"
        self.last_ok = False
        self.consecutive_failures += 1
        self.failed_count += 1
