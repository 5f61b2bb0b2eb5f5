"""Backups that restore: `pumpparty backup create|verify` as processes, each failure stage
of a check, the result as an event and a metric, and the daily job.

Scratch clusters take seconds to start: the in-process checks share one for the module;
the CLI's verify and the job start their own, as in production.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from aggregates.backups import BACKUP_CHECKS_ID, BackupChecks, CheckStage
from aggregates.base import CommandContext
from projections.audit_chain import Digest
from runtime.clock import FixedClock
from runtime.pg_tools import PgTools, pg_tools, scratch_cluster
from services.backups import (
    BACKUP_JOB,
    CheckResult,
    Manifest,
    backup_checks,
    check_backup,
    create_backup,
    manifest_path,
    next_due,
    record_check,
)
from services.bootstrap import Services
from tests.integration.test_cli import REPO, cli_env, pumpparty_command, tamper
from tests.support.jobs import run_job
from tests.support.log import append_events
from tests.support.monitor import monitor_headers

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

Cli = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="module")
def tools() -> PgTools:
    return pg_tools(None)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One scratch cluster for the module's in-process checks (each restores into a new
    database on it, dropped after)."""
    with scratch_cluster(tmp_path_factory.mktemp("scratch")) as url:
        yield url


def shared(url: str) -> Callable[[], AbstractContextManager[str]]:
    return lambda: nullcontext(url)


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    env = cli_env(database_url, tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            pumpparty_command(*args),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    return run


@pytest.fixture
def backup(
    services: Services, context: CommandContext, database_url: str, tools: PgTools, tmp_path: Path
) -> tuple[Path, Manifest]:
    """A dump of a log of 40 events, made in-process as `backup create` makes it."""
    append_events(services, context, 40)
    out = tmp_path / "ledger.dump"
    return out, create_backup(database_url, out, tools, NOW)


def checks(services: Services) -> BackupChecks:
    found = backup_checks(services.event_log)
    assert found is not None
    return found


# --- through the CLI, as an operator runs it ---------------------------------------------


def test_create_then_verify_passes_and_the_check_is_an_event(
    cli: Cli, services: Services, context: CommandContext, tmp_path: Path
) -> None:
    append_events(services, context, 25)
    dump = tmp_path / "nightly.dump"

    created = cli("backup", "create", "--out", str(dump))
    verified = cli("backup", "verify", str(dump))

    assert created.returncode == 0, created.stderr
    manifest = Manifest.from_json(manifest_path(dump).read_bytes())
    assert (manifest.events, manifest.log_head) == (25, 25)
    assert f"log: 25 events, head 25, chain digest {manifest.chain_head}" in created.stdout
    assert oct(dump.stat().st_mode & 0o777) == "0o600"
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("ok: nightly.dump restored into a scratch cluster")
    assert f"head {manifest.chain_head} is the one recorded at dump time" in verified.stdout
    record = checks(services)
    assert (record.verified_count, record.failed_count, record.last_ok) == (1, 0, True)
    assert record.last_verified_head == 25
    assert not list((tmp_path / "backups" / ".scratch").iterdir()), "scratch dir cleaned up"


def damaged(dump: Path, how: str) -> None:
    data = dump.read_bytes()
    middle = len(data) // 2
    if how == "truncate":
        dump.write_bytes(data[:middle])
    elif how == "edit":
        dump.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    else:
        dump.write_bytes(data + b"\0")


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncate", "FAILED (checksum): the dump is truncated: "),
        ("edit", "FAILED (checksum): the dump was edited: its SHA-256 is "),
    ],
)
def test_a_truncated_or_edited_backup_fails_verify_with_a_clear_message(
    cli: Cli, services: Services, backup: tuple[Path, Manifest], how: str, message: str
) -> None:
    dump, _ = backup
    damaged(dump, how)

    result = cli("backup", "verify", str(dump))

    assert result.returncode == 1
    assert result.stdout.startswith(message), result.stdout
    record = checks(services)
    assert (record.failed_count, record.last_ok) == (1, False)
    assert record.last_failure is not None and record.last_failure.startswith("checksum: ")


def test_verify_of_a_file_that_is_no_backup_says_so(cli: Cli, tmp_path: Path) -> None:
    stray = tmp_path / "stray.dump"
    stray.write_bytes(b"PGDMP not really")

    result = cli("backup", "verify", str(stray), "--no-record")

    assert result.returncode == 1
    assert result.stdout.startswith(
        "FAILED (manifest): no manifest beside the dump (stray.dump.manifest.json)"
    )


def test_each_early_stage_names_what_is_wrong(
    backup: tuple[Path, Manifest], tools: PgTools, tmp_path: Path
) -> None:
    dump, manifest = backup
    nowhere = check_backup(tmp_path / "nothing.dump", tools, shared("unused"))
    damaged(dump, "extend")
    extended = check_backup(dump, tools, shared("unused"))
    manifest_path(dump).write_text("{not json")
    unreadable = check_backup(dump, tools, shared("unused"))

    assert nowhere.describe() == f"FAILED (manifest): no backup at {tmp_path / 'nothing.dump'}"
    assert extended.describe() == (
        f"FAILED (checksum): the dump was extended: {manifest.size_bytes + 1:,} bytes,"
        f" {manifest.size_bytes:,} were written"
    )
    assert unreadable.stage == CheckStage.MANIFEST
    assert unreadable.reason is not None
    assert unreadable.reason.startswith("the manifest ledger.dump.manifest.json is unreadable")


# --- every stage, in-process on a shared scratch cluster ---------------------------------


def test_a_dump_restores_and_verifies_against_its_manifest_and_kept_digests(
    backup: tuple[Path, Manifest], tools: PgTools, scratch: str
) -> None:
    dump, manifest = backup
    assert manifest.chain_head is not None

    result = check_backup(dump, tools, shared(scratch), [manifest.chain_head])

    assert result.ok, result.describe()
    assert (result.checked, result.head) == (40, manifest.chain_head)
    assert manifest.log_head == manifest.events == 40


def test_a_digest_the_dump_does_not_match_fails_the_chain(
    backup: tuple[Path, Manifest], tools: PgTools, scratch: str
) -> None:
    dump, _ = backup

    result = check_backup(dump, tools, shared(scratch), [Digest(7, b"\x01" * 32)])

    assert (result.stage, result.reason) == (
        CheckStage.CHAIN,
        "audit verify of the restored log failed at position 7: the digest does not match",
    )


def test_a_dump_of_an_altered_log_fails_audit_verify_after_restore(
    services: Services,
    context: CommandContext,
    database_url: str,
    tools: PgTools,
    scratch: str,
    tmp_path: Path,
) -> None:
    append_events(services, context, 30)
    tamper(
        database_url,
        "UPDATE pumpparty_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
        " '\"by\":1', '\"by\":100'), 'UTF8') WHERE notification_id = %s",
        12,
    )
    dump = tmp_path / "altered.dump"
    create_backup(database_url, dump, tools, NOW)  # its bytes match its manifest

    result = check_backup(dump, tools, shared(scratch))

    assert (result.stage, result.reason) == (
        CheckStage.CHAIN,
        "audit verify of the restored log failed at position 12: the event was altered",
    )


def test_an_edited_dump_with_a_forged_manifest_still_fails(
    backup: tuple[Path, Manifest], tools: PgTools, scratch: str
) -> None:
    dump, _ = backup
    data = bytearray(dump.read_bytes())
    for at in range(len(data) // 3, len(data) // 3 + 64):  # inside the compressed data
        data[at] ^= 0x5A
    dump.write_bytes(bytes(data))
    forged = orjson.loads(manifest_path(dump).read_bytes())
    forged["dump"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    manifest_path(dump).write_bytes(orjson.dumps(forged))

    result = check_backup(dump, tools, shared(scratch))

    assert not result.ok
    assert result.stage in {CheckStage.ARCHIVE, CheckStage.RESTORE, CheckStage.CHAIN}, result


def test_a_manifest_that_records_another_head_fails_the_head(
    backup: tuple[Path, Manifest], tools: PgTools, scratch: str
) -> None:
    dump, manifest = backup
    other = orjson.loads(manifest_path(dump).read_bytes())
    other["log"]["chain_digest"] = f"41:{'ab' * 32}"
    manifest_path(dump).write_bytes(orjson.dumps(other))

    result = check_backup(dump, tools, shared(scratch))

    assert result.stage == CheckStage.HEAD
    assert result.reason == (
        f"the restored chain ends at {manifest.chain_head}, the manifest recorded 41:{'ab' * 32}"
    )


def test_an_empty_log_backs_up_and_verifies(
    database_url: str, tools: PgTools, scratch: str, tmp_path: Path
) -> None:
    dump = tmp_path / "empty.dump"
    manifest = create_backup(database_url, dump, tools, NOW)

    result = check_backup(dump, tools, shared(scratch))

    assert (manifest.events, manifest.log_head, manifest.chain_head) == (0, 0, None)
    assert result.ok and result.checked == 0


# --- the result: an event and a metric ---------------------------------------------------


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_each_check_is_an_event_and_the_metric_moves(
    client: TestClient,
    services: Services,
    backup: tuple[Path, Manifest],
    tools: PgTools,
    scratch: str,
) -> None:
    dump, manifest = backup
    headers = monitor_headers(client)
    before = client.get("/metrics", headers=headers).text
    failed = CheckResult(dump, manifest, CheckStage.RESTORE, "pg_restore failed: disk full")
    fail_at = NOW + timedelta(hours=1)
    verify_at = NOW + timedelta(hours=2)

    record_check(services.event_log, CommandContext("worker:t", fail_at, "run-1"), failed)
    after_failure = client.get("/metrics", headers=headers).text
    verified = check_backup(dump, tools, shared(scratch))
    written = record_check(
        services.event_log, CommandContext("worker:t", verify_at, "run-2"), verified
    )
    after_success = client.get("/metrics", headers=headers).text

    last_verified = "pumpparty_backup_last_verified_timestamp_seconds"
    assert metric(before, last_verified) is None
    assert metric(before, "pumpparty_backup_consecutive_failures") == 0
    assert metric(after_failure, "pumpparty_backup_last_check_ok") == 0
    assert metric(after_failure, "pumpparty_backup_consecutive_failures") == 1
    assert metric(after_success, last_verified) == verify_at.timestamp()
    assert metric(after_success, "pumpparty_backup_last_check_ok") == 1
    assert metric(after_success, "pumpparty_backup_consecutive_failures") == 0
    with psycopg.connect(services.url) as conn:
        topics = [
            row[0]
            for row in conn.execute(
                "SELECT topic FROM pumpparty_events WHERE originator_id = %s"
                " ORDER BY notification_id",
                (BACKUP_CHECKS_ID,),
            )
        ]
        row = conn.execute(
            "SELECT state FROM pumpparty_events WHERE notification_id = %s", (written.position,)
        ).fetchone()
    assert [topic.rsplit(".", 1)[-1] for topic in topics] == ["Opened", "Failed", "Verified"]
    assert row is not None
    event = orjson.loads(bytes(row[0]))
    assert event["head_position"] == 40 and event["events"] == 40
    assert event["sha256"] == manifest.sha256


def test_the_rules_series_that_the_ledger_exports_are_on_its_metrics(
    client: TestClient, services: Services
) -> None:
    from scripts.worker import Heartbeats

    Heartbeats(services).beat_all(["ledger_reconciliation"], 60.0, error="RuntimeError: down")
    client.get("/v1/health")  # one request timed
    text = client.get("/metrics", headers=monitor_headers(client)).text

    for series in (
        "pumpparty_http_request_duration_seconds_bucket",
        "pumpparty_projection_lag_events",
        "pumpparty_projection_stalled",
        "pumpparty_reconciliation_breaches",
        "pumpparty_ingest_status",
        "pumpparty_backup_consecutive_failures",
    ):
        assert metric(text, series) is not None, series
    job = '{job="ledger_reconciliation"}'
    age = metric(text, f"pumpparty_worker_heartbeat_age_seconds{job}")
    assert age is not None and 0 <= age < 60
    assert metric(text, f"pumpparty_worker_heartbeat_interval_seconds{job}") == 60
    assert metric(text, f"pumpparty_worker_job_failing{job}") == 1


# --- the daily job -----------------------------------------------------------------------


def test_the_first_backup_is_due_a_day_after_the_first_event_then_daily() -> None:
    day, hour = timedelta(days=1), timedelta(hours=1)

    assert next_due(None, None, day, hour) is None
    assert next_due(None, NOW, day, hour) == NOW + day - hour


def test_the_job_waits_while_not_due_then_dumps_verifies_records_and_prunes(
    services: Services, context: CommandContext, tmp_path: Path
) -> None:
    empty = run_job(services, BACKUP_JOB, FixedClock(NOW))
    append_events(services, context, 10)
    soon = run_job(services, BACKUP_JOB, FixedClock(datetime.now(UTC)))
    old = tmp_path / "backups" / "pumpparty-20200101T000000Z.dump"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an old dump")
    manifest_path(old).write_bytes(b"{}")
    services.settings = services.settings.model_copy(update={"backup_keep": 1})
    later = datetime.now(UTC) + timedelta(days=2)

    done = run_job(services, BACKUP_JOB, FixedClock(later))
    again = run_job(services, BACKUP_JOB, FixedClock(later + timedelta(hours=1)))

    assert empty == "nothing to back up: the log is empty"
    assert soon.startswith("next backup due at ")
    assert done.startswith("ok: pumpparty-"), done
    assert again.startswith("next backup due at ")
    record = checks(services)
    assert (record.verified_count, record.last_verified_at) == (1, later)
    kept = sorted(path.name for path in (tmp_path / "backups").glob("pumpparty-*"))
    assert len(kept) == 2 and kept[0].endswith(".dump"), kept  # the new dump and its manifest
    assert not old.exists() and not manifest_path(old).exists()


def test_the_job_records_a_failed_dump(services: Services, context: CommandContext) -> None:
    append_events(services, context, 3)
    services.settings = services.settings.model_copy(
        update={"pg_bin": Path(os.devnull).parent / "no-such-folder"}
    )
    later = datetime.now(UTC) + timedelta(days=2)

    outcome = run_job(services, BACKUP_JOB, FixedClock(later))

    assert outcome.startswith("FAILED (dump): cannot dump: pg_dump not found in "), outcome
    record = checks(services)
    assert (record.failed_count, record.consecutive_failures) == (1, 1)


def test_a_dump_that_fails_its_check_is_set_aside_and_retried_within_the_hour(
    services: Services, context: CommandContext, tools: PgTools, tmp_path: Path
) -> None:
    broken = tmp_path / "pg-bin"
    broken.mkdir()
    (broken / "pg_dump").symlink_to(tools.path("pg_dump"))
    (broken / "pg_restore").write_text(
        "#!/bin/sh\necho 'pg_restore: error: simulated' >&2\nexit 1\n"
    )
    (broken / "pg_restore").chmod(0o755)
    services.settings = services.settings.model_copy(update={"pg_bin": broken})
    append_events(services, context, 3)
    later = datetime.now(UTC) + timedelta(days=2)

    first = run_job(services, BACKUP_JOB, FixedClock(later))
    too_soon = run_job(services, BACKUP_JOB, FixedClock(later + timedelta(minutes=20)))
    retried = run_job(services, BACKUP_JOB, FixedClock(later + timedelta(minutes=40)))

    message = "FAILED (archive): pg_restore cannot read the archive: pg_restore: error: simulated"
    assert first == message
    assert too_soon.startswith("next backup due at ")
    assert retried == message
    backups = tmp_path / "backups"
    assert not list(backups.glob("pumpparty-*")), "failed dumps leave the good ones' folder"
    kept = sorted(path.name for path in (backups / "failed").iterdir())
    newest = f"pumpparty-{later + timedelta(minutes=40):%Y%m%dT%H%M%SZ}.dump"
    assert kept == [newest, newest + ".manifest.json"]
    assert checks(services).consecutive_failures == 2
