"""Backups known to restore (issue 20): a dump, what it holds, and a check that proves it.

`create_backup` runs `pg_dump -Fc` inside a snapshot exported by a transaction that, in the
same snapshot, reads the log's head, its event count and the hash chain's digest at that
head; beside the dump it writes a manifest of those and of the dump's size and SHA-256.
`check_backup` takes a dump through every stage of `CheckStage`: the manifest, the bytes
(truncated or edited?), `pg_restore --list`, a restore into a scratch cluster, `audit
verify` of the restored log, and its head against the manifest. `record_check` makes the
result an event (`BackupChecks`); `BackupRound` is the daily job that does all three.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import psycopg
from psycopg import IsolationLevel
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.sql import SQL, Identifier

from aggregates.backups import BACKUP_CHECKS_ID, BackupChecks, CheckStage
from aggregates.base import CommandContext
from projections.audit_chain import Digest, head_digest, verify
from runtime.clock import Clock
from runtime.database import database_urls
from runtime.leases import lease
from runtime.pg_tools import PgToolError, PgTools, first_lines, scratch_cluster
from runtime.private_files import write_private
from runtime.schema import EVENTS_TABLE
from runtime.settings import Settings
from services.eventlog import EventLog, UnitOfWork, Written
from services.jobs import job_context

log = logging.getLogger(__name__)

BACKUP_JOB = "backup_check"
MANIFEST_FORMAT = "pumpparty-backup/1"
MANIFEST_SUFFIX = ".manifest.json"
LOG_TABLES = (EVENTS_TABLE, "audit_chain")
"""Tables whose data a dump of the log must hold."""

Restorer = Callable[[], AbstractContextManager[str]]
"""Gives the URL of a PostgreSQL server to restore into for the length of a check."""


class BackupFailedError(Exception):
    """A backup could not be made or did not check out: the stage and a plain reason."""

    def __init__(self, stage: CheckStage, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def manifest_path(dump: Path) -> Path:
    """Where a dump's manifest lives: beside it, `<dump>.manifest.json`."""
    return dump.with_name(dump.name + MANIFEST_SUFFIX)


def backup_name(now: datetime) -> str:
    return f"pumpparty-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.dump"


@dataclass(frozen=True)
class Manifest:
    """What a dump holds, recorded when it was taken (in the dump's own snapshot)."""

    backup_id: UUID
    taken_at: datetime
    database: str
    server_version: str
    pg_dump: str
    file: str
    size_bytes: int
    sha256: str
    log_head: int
    """The highest log position in the dump (0: an empty log)."""
    events: int
    chain_head: Digest | None
    """The hash chain's digest at that head: what `audit verify` must end on."""

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": MANIFEST_FORMAT,
                "backup_id": str(self.backup_id),
                "taken_at": self.taken_at.isoformat(),
                "database": self.database,
                "server_version": self.server_version,
                "pg_dump": self.pg_dump,
                "dump": {"file": self.file, "bytes": self.size_bytes, "sha256": self.sha256},
                "log": {
                    "head": self.log_head,
                    "events": self.events,
                    "chain_digest": None if self.chain_head is None else str(self.chain_head),
                },
            },
            option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE,
        )

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        document: Any = orjson.loads(data)
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a {MANIFEST_FORMAT} manifest")
        dump, log_ = document["dump"], document["log"]
        digest = log_["chain_digest"]
        return cls(
            backup_id=UUID(document["backup_id"]),
            taken_at=datetime.fromisoformat(document["taken_at"]),
            database=str(document["database"]),
            server_version=str(document["server_version"]),
            pg_dump=str(document["pg_dump"]),
            file=str(dump["file"]),
            size_bytes=int(dump["bytes"]),
            sha256=str(dump["sha256"]),
            log_head=int(log_["head"]),
            events=int(log_["events"]),
            chain_head=None if digest is None else Digest.parse(str(digest)),
        )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- create --------------------------------------------------------------------------------


def create_backup(source_url: str, out: Path, tools: PgTools, now: datetime) -> Manifest:
    """`pg_dump -Fc` of the database at `source_url` to `out`, and its manifest beside it.

    The dump runs in a snapshot exported by the transaction that reads the log's head, its
    count and the chain's digest, so the manifest describes exactly what the dump holds,
    however busy the log is. `source_url`'s role must read every table and sequence.
    """
    if out.exists() or manifest_path(out).exists():
        raise BackupFailedError(CheckStage.DUMP, f"{out} exists: choose another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        with psycopg.connect(source_url) as conn:
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                snapshot = _one(conn, SQL("SELECT pg_export_snapshot()"))
                log_head, events = _row(
                    conn,
                    SQL("SELECT coalesce(max(notification_id), 0), count(*) FROM {}").format(
                        Identifier(EVENTS_TABLE)
                    ),
                )
                chain_head = head_digest(conn)
                server_version = _one(conn, SQL("SHOW server_version"))
                database = conn.info.dbname
                dumped = tools.run(
                    "pg_dump",
                    ["--format=custom", f"--snapshot={snapshot}", f"--file={partial}"],
                    url=source_url,
                )
        if dumped.returncode != 0:
            raise BackupFailedError(
                CheckStage.DUMP,
                f"pg_dump failed: {first_lines(dumped.stderr)} (the role that dumps must read"
                " every table and sequence: PUMPPARTY_BACKUP_DATABASE_URL, or the owner's URL)",
            )
        partial.chmod(0o600)
        partial.replace(out)
    except (psycopg.Error, PgToolError) as error:
        raise BackupFailedError(
            CheckStage.DUMP, f"cannot dump: {first_lines(str(error))}"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    manifest = Manifest(
        backup_id=uuid4(),
        taken_at=now,
        database=database,
        server_version=str(server_version),
        pg_dump=tools.version("pg_dump"),
        file=out.name,
        size_bytes=out.stat().st_size,
        sha256=sha256_of(out),
        log_head=int(log_head),
        events=int(events),
        chain_head=chain_head,
    )
    write_private(manifest_path(out), manifest.to_json())
    return manifest


def _row(conn: psycopg.Connection[Any], query: SQL | Any) -> tuple[Any, ...]:
    row = conn.execute(query).fetchone()
    assert row is not None
    return tuple(row)


def _one(conn: psycopg.Connection[Any], query: SQL | Any) -> Any:
    return _row(conn, query)[0]


# --- check ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    dump: Path
    manifest: Manifest | None
    stage: CheckStage | None
    """Where the check stopped; None when the backup verified."""
    reason: str | None
    checked: int = 0
    head: Digest | None = None
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.stage is None

    def describe(self) -> str:
        if not self.ok:
            return f"FAILED ({self.stage}): {self.reason}"
        head = self.head or "none"
        return (
            f"ok: {self.dump.name} restored into a scratch cluster; audit verify passed over"
            f" {self.checked} events; head {head} is the one recorded at dump time"
        )


def read_manifest(dump: Path) -> Manifest:
    if not dump.is_file():
        raise BackupFailedError(CheckStage.MANIFEST, f"no backup at {dump}")
    where = manifest_path(dump)
    if not where.is_file():
        raise BackupFailedError(
            CheckStage.MANIFEST,
            f"no manifest beside the dump ({where.name}): only a backup made by"
            " `pumpparty backup create` records what it must hold",
        )
    try:
        return Manifest.from_json(where.read_bytes())
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as error:
        raise BackupFailedError(
            CheckStage.MANIFEST, f"the manifest {where.name} is unreadable: {error}"
        ) from None


def check_file(dump: Path, manifest: Manifest) -> None:
    """The dump is the file that was written: same length, same SHA-256."""
    size = dump.stat().st_size
    if size < manifest.size_bytes:
        raise BackupFailedError(
            CheckStage.CHECKSUM,
            f"the dump is truncated: {size:,} bytes of the {manifest.size_bytes:,} written",
        )
    if size > manifest.size_bytes:
        raise BackupFailedError(
            CheckStage.CHECKSUM,
            f"the dump was extended: {size:,} bytes, {manifest.size_bytes:,} were written",
        )
    found = sha256_of(dump)
    if found != manifest.sha256:
        raise BackupFailedError(
            CheckStage.CHECKSUM,
            f"the dump was edited: its SHA-256 is {found[:16]}…, the manifest recorded"
            f" {manifest.sha256[:16]}… (same length, other bytes)",
        )


def check_archive(dump: Path, tools: PgTools) -> None:
    """`pg_restore --list` reads the archive's table of contents, which must hold the log."""
    listed = _tool(CheckStage.ARCHIVE, tools, "pg_restore", ["--list", str(dump)])
    if listed.returncode != 0:
        raise BackupFailedError(
            CheckStage.ARCHIVE, f"pg_restore cannot read the archive: {first_lines(listed.stderr)}"
        )
    for table in LOG_TABLES:
        if f"TABLE DATA public {table} " not in listed.stdout:
            raise BackupFailedError(
                CheckStage.ARCHIVE, f"the archive holds no data for the log's table {table}"
            )


def restore_and_verify(
    dump: Path,
    manifest: Manifest,
    tools: PgTools,
    server_url: str,
    digests: Sequence[Digest] = (),
) -> tuple[int, Digest | None]:
    """Restore into a new database on `server_url`, run `audit verify` over it (with any
    digests an auditor kept), compare its head with the manifest, drop the database."""
    name = f"pumpparty_restore_{uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))
    target = _with_dbname(server_url, name)
    try:
        restored = _tool(
            CheckStage.RESTORE,
            tools,
            "pg_restore",
            ["--no-owner", "--no-privileges", "--exit-on-error", str(dump)],
            url=target,
        )
        if restored.returncode != 0:
            raise BackupFailedError(
                CheckStage.RESTORE, f"pg_restore failed: {first_lines(restored.stderr)}"
            )
        try:
            result = verify(target, digests)
            with psycopg.connect(target) as conn:
                log_head = _one(
                    conn,
                    SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(
                        Identifier(EVENTS_TABLE)
                    ),
                )
        except psycopg.Error as error:
            raise BackupFailedError(
                CheckStage.CHAIN, f"the restored log cannot be read: {first_lines(str(error))}"
            ) from None
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(Identifier(name)))
    if not result.ok:
        raise BackupFailedError(
            CheckStage.CHAIN,
            f"audit verify of the restored log failed at position {result.first_bad_position}:"
            f" {result.problem}",
        )
    if result.head != manifest.chain_head:
        raise BackupFailedError(
            CheckStage.HEAD,
            f"the restored chain ends at {result.head or 'nothing'}, the manifest recorded"
            f" {manifest.chain_head or 'nothing'}",
        )
    if (log_head, result.checked) != (manifest.log_head, manifest.events):
        raise BackupFailedError(
            CheckStage.HEAD,
            f"the restored log has {result.checked} events up to position {log_head}, the"
            f" manifest recorded {manifest.events} up to {manifest.log_head}",
        )
    return result.checked, result.head


def check_backup(
    dump: Path,
    tools: PgTools,
    restore_into: Restorer,
    digests: Sequence[Digest] = (),
    *,
    on_stage: Callable[[CheckStage], None] | None = None,
) -> CheckResult:
    """Every stage, in order, until one fails; the scratch server is started only for the
    restore (`restore_into`, e.g. `lambda: scratch_cluster(parent)`)."""
    started = time.monotonic()
    manifest: Manifest | None = None

    def stage(which: CheckStage) -> None:
        if on_stage is not None:
            on_stage(which)

    try:
        stage(CheckStage.MANIFEST)
        manifest = read_manifest(dump)
        stage(CheckStage.CHECKSUM)
        check_file(dump, manifest)
        stage(CheckStage.ARCHIVE)
        check_archive(dump, tools)
        stage(CheckStage.RESTORE)
        try:
            with restore_into() as server_url:
                checked, head = restore_and_verify(dump, manifest, tools, server_url, digests)
        except PgToolError as error:
            raise BackupFailedError(CheckStage.RESTORE, str(error)) from None
        except psycopg.Error as error:
            raise BackupFailedError(
                CheckStage.RESTORE, f"the scratch server failed: {first_lines(str(error))}"
            ) from None
    except BackupFailedError as failure:
        return CheckResult(
            dump, manifest, failure.stage, failure.reason, duration_ms=_since(started)
        )
    return CheckResult(
        dump, manifest, None, None, checked=checked, head=head, duration_ms=_since(started)
    )


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _tool(
    stage: CheckStage, tools: PgTools, name: str, args: list[str], *, url: str | None = None
) -> Any:
    try:
        return tools.run(name, args, url=url)
    except PgToolError as error:
        raise BackupFailedError(stage, str(error)) from None


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


# --- the record: an event per check --------------------------------------------------------


def record_check(
    event_log: EventLog, context: CommandContext, result: CheckResult
) -> Written[BackupChecks]:
    """The check's result as an event on the deployment's `BackupChecks`."""

    def decide(unit: UnitOfWork) -> BackupChecks:
        checks = unit.find(BackupChecks, BACKUP_CHECKS_ID) or unit.add(BackupChecks.open())
        manifest = result.manifest
        if result.ok and manifest is not None:
            head = result.head
            checks.verify(
                backup_id=manifest.backup_id,
                file=str(result.dump),
                sha256=manifest.sha256,
                taken_at=manifest.taken_at,
                head_position=0 if head is None else head.position,
                head_hash="" if head is None else head.hash.hex(),
                events=result.checked,
                checked_at=context.occurred_at,
                duration_ms=result.duration_ms,
            )
        else:
            checks.fail(
                backup_id=None if manifest is None else manifest.backup_id,
                file=str(result.dump),
                stage=result.stage or CheckStage.MANIFEST,
                reason=result.reason or "unknown",
                checked_at=context.occurred_at,
            )
        return checks

    return event_log.execute(context, decide)


def backup_checks(event_log: EventLog) -> BackupChecks | None:
    """The deployment's record of checks (None before the first), for metrics and health."""
    return event_log.read(BackupChecks, BACKUP_CHECKS_ID)


# --- where dumps go, as whom, with what ------------------------------------------------------


def backup_dir(settings: Settings) -> Path:
    return settings.backup_dir or settings.data_dir / "backups"


def dump_url(settings: Settings, service_url: str) -> str:
    """The role a dump runs as: PUMPPARTY_BACKUP_DATABASE_URL's, else the owner's when this
    process has it (a URL, or the embedded server it runs), else the service's (which may not
    read the sequences: the dump then fails and says so)."""
    if settings.backup_database_url:
        return settings.backup_database_url
    if settings.database_url:
        return settings.database_url
    if not settings.service_database_url:
        owner = database_urls(settings).owner
        if owner:
            return owner
    return service_url


def backup_cadence(settings: Settings) -> float:
    """How often the job looks whether a backup is due: hourly, or every interval if shorter."""
    return min(3600.0, settings.backup_interval)


def next_due(
    checks: BackupChecks | None,
    first_event_at: datetime | None,
    interval: timedelta,
    cadence: timedelta,
) -> datetime | None:
    """When the next backup is due; None while the log is empty (nothing to keep).

    One interval after the last verified backup, less one look of the job (so, looking every
    `cadence`, one is taken every interval, never later); with none verified yet, one interval
    after the log's first event, so a new deployment (or a test's worker) does not start
    with a dump. After a failed check, the next look but one retries.
    """
    verified = checks.last_verified_at if checks else None
    base = verified or first_event_at
    if base is None:
        return None
    due = base + interval - cadence
    failed = checks.last_failed_at if checks else None
    if failed is not None and (verified is None or failed > verified):
        due = max(due, failed + cadence / 2)
    return due


def first_event_at(url: str) -> datetime | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            SQL("SELECT recorded_at FROM {} ORDER BY notification_id LIMIT 1").format(
                Identifier(EVENTS_TABLE)
            )
        ).fetchone()
    return None if row is None else row[0]


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` dumps the job made there (and their manifests)."""
    dumps = sorted(directory.glob("pumpparty-*.dump"))
    removed = dumps[:-keep] if keep else dumps
    for dump in removed:
        dump.unlink(missing_ok=True)
        manifest_path(dump).unlink(missing_ok=True)
    return removed


@dataclass(frozen=True)
class BackupRound:
    """The daily job: when a backup is due, dump, check the dump in a scratch cluster,
    record the result as an event, and (verified) keep only the newest `keep` dumps. A check
    that fails is recorded, not raised: the worker would retry a whole dump at once."""

    event_log: EventLog
    source_url: str
    lease_url: str
    directory: Path
    tools: PgTools
    interval: float
    cadence: float
    keep: int
    clock: Clock

    def due_at(self) -> datetime | None:
        return next_due(
            backup_checks(self.event_log),
            first_event_at(self.lease_url),
            timedelta(seconds=self.interval),
            timedelta(seconds=self.cadence),
        )

    def __call__(self) -> str:
        due = self.due_at()
        if due is None:
            return "nothing to back up: the log is empty"
        if self.clock() < due:
            return f"next backup due at {due.isoformat(timespec='seconds')}"
        with lease(self.lease_url, BACKUP_JOB) as held:
            if not held:
                return "another worker is taking the backup"
            return self.take_and_check()

    def take_and_check(self) -> str:
        out = self.directory / backup_name(self.clock())
        try:
            create_backup(self.source_url, out, self.tools, self.clock())
        except BackupFailedError as failure:
            result = CheckResult(out, None, failure.stage, failure.reason)
        else:
            result = check_backup(
                out, self.tools, lambda: scratch_cluster(self.directory / ".scratch")
            )
        key = str(result.manifest.backup_id) if result.manifest else out.name
        record_check(self.event_log, job_context(BACKUP_JOB, self.clock, key), result)
        if result.ok:
            removed = prune(self.directory, self.keep)
            if removed:
                log.info("pruned %d old backups", len(removed))
        else:
            log.error("backup check of %s %s", out, result.describe())
            set_aside(out)
        return result.describe()


def set_aside(dump: Path) -> None:
    """A dump that failed its check leaves the good ones' folder for `failed/`, where only
    the newest is kept (for inspection): an hourly retry must not fill the disk."""
    if not dump.exists():
        return
    failed = dump.parent / "failed"
    failed.mkdir(exist_ok=True)
    dump.replace(failed / dump.name)
    if manifest_path(dump).exists():
        manifest_path(dump).replace(manifest_path(failed / dump.name))
    prune(failed, 1)
