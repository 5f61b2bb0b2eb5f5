"""`pumpparty backup create|verify`: a dump with its manifest, and the check that proves it
restores to the log recorded at dump time (`services/backups.py` does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aggregates.backups import CheckStage
from aggregates.base import CommandContext
from projections.audit_chain import Digest
from runtime.clock import system_clock
from runtime.database import database_urls
from runtime.pg_tools import pg_tools, scratch_cluster
from runtime.settings import Settings
from scripts.command_line import OPERATOR, fail, settings_of
from services.backups import (
    BackupFailedError,
    CheckResult,
    backup_dir,
    backup_name,
    check_backup,
    create_backup,
    dump_url,
    manifest_path,
    record_check,
)
from services.bootstrap import open_services

backup_app = typer.Typer(help="Backups: a dump with its manifest, and a restore check.")

STAGES = {
    CheckStage.MANIFEST: "reading the manifest",
    CheckStage.CHECKSUM: "comparing the dump's size and SHA-256 with the manifest",
    CheckStage.ARCHIVE: "listing the archive (pg_restore --list)",
    CheckStage.RESTORE: "restoring into a scratch cluster, then audit verify",
}


@backup_app.command("create")
def backup_create(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write the dump (default: the backup dir, by time)."),
    ] = None,
) -> None:
    """Dump the database (pg_dump -Fc) with a manifest of the log's head and chain digest.

    The manifest (`<dump>.manifest.json`) holds the log's head, its event count and the
    hash chain's digest, read in the dump's own snapshot, and the dump's size and SHA-256.
    """
    settings = settings_of(ctx)
    now = system_clock()
    path = out or backup_dir(settings) / backup_name(now)
    urls = database_urls(settings)
    try:
        manifest = create_backup(
            dump_url(settings, urls.service), path, pg_tools(settings.pg_bin), now
        )
    except BackupFailedError as failure:
        fail(f"backup failed: {failure.reason}")
    typer.echo(f"dump: {path} ({manifest.size_bytes:,} bytes, sha256 {manifest.sha256})")
    typer.echo(f"manifest: {manifest_path(path)}")
    typer.echo(
        f"log: {manifest.events} events, head {manifest.log_head},"
        f" chain digest {manifest.chain_head or 'none (empty log)'}"
    )


@backup_app.command("verify")
def backup_verify(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The dump (its manifest beside it).")],
    digest: Annotated[
        list[str] | None,
        typer.Option(help="A digest kept earlier, POSITION:HEX, checked too (repeatable)."),
    ] = None,
    record: Annotated[
        bool, typer.Option(help="Record the result as an event in the configured database.")
    ] = True,
) -> None:
    """Restore a dump into a scratch cluster and verify its log against its manifest.

    Checks the manifest, the dump's size and SHA-256, `pg_restore --list`, then restores
    into a scratch cluster, runs `audit verify` there and compares the head with the
    manifest. Exits 1 when any stage fails; the result is recorded as an event.
    """
    settings = settings_of(ctx)
    try:
        digests = [Digest.parse(text) for text in digest or []]
    except ValueError:
        raise typer.BadParameter("expected POSITION:HEX", param_hint="--digest") from None
    scratch_parent = backup_dir(settings) / ".scratch"
    result = check_backup(
        path,
        pg_tools(settings.pg_bin),
        lambda: scratch_cluster(scratch_parent),
        digests,
        on_stage=lambda stage: typer.echo(f"… {STAGES.get(stage, stage)}", err=True),
    )
    typer.echo(result.describe())
    if record:
        _record(settings, result)
    if not result.ok:
        raise typer.Exit(1)


def _record(settings: Settings, result: CheckResult) -> None:
    context = CommandContext(
        actor=OPERATOR,
        occurred_at=system_clock(),
        correlation_id=f"backup-verify:{result.manifest.backup_id if result.manifest else '-'}",
    )
    try:
        services = open_services(settings, run_migrations=False)
    except Exception as error:
        typer.echo(f"pumpparty: the check was not recorded: {error}", err=True)
        return
    try:
        written = record_check(services.event_log, context, result)
    except Exception as error:
        typer.echo(f"pumpparty: the check was not recorded: {error}", err=True)
    else:
        typer.echo(f"recorded at log position {written.position}", err=True)
    finally:
        services.close()
