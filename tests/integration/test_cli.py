"""`pumpparty` run as a real process against the test's database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import psycopg
import pytest

from aggregates.base import CommandContext
from projections.audit_log import AuditLog
from projections.registry import PROJECTIONS
from projections.runner import ProjectionRunner
from services.bootstrap import Services
from tests.support.counter import Counter, new_counter
from tests.support.database import with_dbname
from tests.support.log import append_events, checksum

REPO = Path(__file__).resolve().parents[2]
NAMES = sorted(cls.name for cls in PROJECTIONS)

Cli = Callable[..., "subprocess.CompletedProcess[str]"]


def cli_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The parent's environment without its PUMPPARTY_ settings, pointed at this database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPPARTY_")}
    env.update(PUMPPARTY_DATABASE_URL=database_url, PUMPPARTY_DATA_DIR=str(data_dir), COLUMNS="200")
    env.update(extra)
    return env


def pumpparty_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "scripts.cli", *args]


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    env = cli_env(database_url, tmp_path)

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            pumpparty_command(*args),
            cwd=REPO,
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def tamper(url: str, statement: str, position: int) -> None:
    """What the append-only trigger stops: only a superuser who disables it can do this."""
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE pumpparty_events DISABLE TRIGGER USER")
        changed = conn.execute(statement, (position,)).rowcount
        conn.execute("ALTER TABLE pumpparty_events ENABLE TRIGGER USER")
    assert changed == 1


def open_and_increment(services: Services, context: CommandContext, times: int) -> UUID:
    counter_id = services.event_log.execute(
        context, lambda unit: unit.add(new_counter("RETRO-CLOCK")).id
    ).result
    for n in range(times):
        later = CommandContext(
            actor=context.actor,
            occurred_at=context.occurred_at + timedelta(minutes=n + 1),
            correlation_id=f"req-{n}",
        )
        services.event_log.execute(
            later, lambda unit: unit.get(Counter, counter_id).increment(by=2)
        )
    return counter_id


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PUMPPARTY_CHAIN_ID", "not-a-number"),
        ("PUMPPARTY_INGEST_MODE", "sometimes"),
        ("PUMPPARTY_SERVICE_TOKENS", "[not json"),
        ("PUMPPARTY_CHAIN_IDD", "8453"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(
    cli: Cli, variable: str, value: str
) -> None:
    result = cli("projections", "list", **{variable: value})

    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("pumpparty: ") and variable in line


# --- migrate -------------------------------------------------------------------------------


@pytest.fixture
def empty_database_url(postgres_url: str) -> Iterator[str]:
    name = f"t_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield with_dbname(postgres_url, name)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_migrate_applies_each_step_once(empty_database_url: str, cli: Cli) -> None:
    before = cli("projections", "status", PUMPPARTY_DATABASE_URL=empty_database_url)
    first = cli("migrate", PUMPPARTY_DATABASE_URL=empty_database_url)
    again = cli("migrate", PUMPPARTY_DATABASE_URL=empty_database_url)
    after = cli("projections", "status", PUMPPARTY_DATABASE_URL=empty_database_url)

    assert before.returncode == 1 and "pumpparty migrate" in before.stderr
    assert first.returncode == 0, first.stderr
    assert [line.split(":")[0] for line in first.stdout.splitlines()[:3]] == [
        "applied step 1",
        "applied step 2",
        "applied step 3",
    ]
    assert f"projections ready: {', '.join(NAMES)}" in first.stdout
    assert again.returncode == 0 and "schema up to date" in again.stdout
    assert after.returncode == 0 and "audit_log" in after.stdout


# --- projections ---------------------------------------------------------------------------


def test_projections_list_names_every_projection(cli: Cli) -> None:
    result = cli("projections", "list")

    assert result.returncode == 0
    assert result.stdout.split() == NAMES and "audit_log" in NAMES


@pytest.mark.parametrize(
    "command",
    [["rebuild", "nope"], ["skip", "nope", "--reason", "x"], ["resume", "nope", "--reason", "x"]],
)
def test_an_unknown_projection_is_a_clear_error(cli: Cli, command: list[str]) -> None:
    result = cli("projections", *command)

    assert result.returncode == 1
    assert result.stderr.strip() == "pumpparty: no projection named 'nope'"


def test_rebuild_yields_exactly_the_live_rows(
    services: Services, context: CommandContext, cli: Cli
) -> None:
    append_events(services, context, 400)
    ProjectionRunner(services.projections, "audit_log", services.url).catch_up()
    live = checksum(services.url)

    result = cli("projections", "rebuild", "audit_log", "--batch-size", "50")

    assert result.returncode == 0, result.stderr
    assert "rebuilt audit_log: generation 2, position 400" in result.stdout
    assert checksum(services.url) == live
    assert services.projections.status("audit_log").generation == 2


class FailingOnPosition3(AuditLog):
    def process_event(self, domain_event, tracking):  # type: ignore[no-untyped-def,override]
        if tracking.notification_id == 3:
            raise ValueError("bug on position 3")
        return super().process_event(domain_event, tracking)


def dead_letter_decisions(url: str) -> list[tuple[str, str]]:
    """Operators' decisions on dead letters, as the audit log shows them: (actor, event)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT actor, event_type FROM audit_log"
            " WHERE aggregate_type = 'DeadLetter' AND event_type <> 'Opened' ORDER BY position"
        ).fetchall()
    return [(str(actor), str(event_type)) for actor, event_type in rows]


def test_status_shows_a_stall_and_skip_moves_past_it(
    services: Services, context: CommandContext, cli: Cli
) -> None:
    append_events(services, context, 6)
    services.projections.classes["audit_log"] = FailingOnPosition3  # type: ignore[assignment]
    runner = ProjectionRunner(services.projections, "audit_log", services.url)
    runner.catch_up()

    stalled = cli("projections", "status")
    skipped = cli("projections", "skip", "audit_log", "--reason", "known bad event, ticket 42")
    again = cli("projections", "skip", "audit_log", "--reason", "twice")
    runner.catch_up()
    caught_up = cli("projections", "status")

    assert stalled.returncode == 0
    [row] = [line for line in stalled.stdout.splitlines() if "audit_log" in line]
    assert "stalled" in row and "bug on position 3" in row
    assert [cell.strip() for cell in re.split("[│|]", row)][2:6] == ["1", "2", "6", "4"]
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped position 3" in skipped.stdout
    assert again.returncode == 1 and "not stalled" in again.stderr
    assert [s["reason"] for s in services.projections.skips("audit_log")] == [
        "known bad event, ticket 42"
    ]
    assert "caught_up" in caught_up.stdout
    # Five of the six events, then the dead letter and its discard, with the operator.
    assert checksum(services.url)[0] == 7
    assert dead_letter_decisions(services.url) == [("operator:cli", "Discarded")]


def test_resume_retries_the_stalled_event(
    services: Services, context: CommandContext, cli: Cli
) -> None:
    append_events(services, context, 6)
    services.projections.classes["audit_log"] = FailingOnPosition3  # type: ignore[assignment]
    ProjectionRunner(services.projections, "audit_log", services.url).catch_up()
    services.projections.classes["audit_log"] = AuditLog  # the fix is deployed

    resumed = cli("projections", "resume", "audit_log", "--reason", "fix deployed")
    ProjectionRunner(services.projections, "audit_log", services.url).catch_up()

    assert resumed.returncode == 0 and "resumed at position 3" in resumed.stdout
    assert checksum(services.url)[0] == 8  # the six events, the dead letter and its replay
    assert dead_letter_decisions(services.url) == [("operator:cli", "Replayed")]


# --- audit ---------------------------------------------------------------------------------


def test_verify_passes_on_an_untouched_log(
    services: Services, context: CommandContext, cli: Cli
) -> None:
    append_events(services, context, 20)

    result = cli("audit", "verify")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 20 events, head 20:")


def test_verify_names_the_first_altered_event(
    services: Services, context: CommandContext, cli: Cli
) -> None:
    append_events(services, context, 20)
    tamper(
        str(services.settings.database_url),
        "UPDATE pumpparty_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
        " '\"by\":1', '\"by\":100'), 'UTF8') WHERE notification_id = %s",
        position=13,
    )

    result = cli("audit", "verify")

    assert result.returncode == 1
    assert result.stdout.strip() == "FAILED at position 13: the event was altered"


def test_verify_names_a_removed_event(
    services: Services, context: CommandContext, cli: Cli
) -> None:
    append_events(services, context, 20)
    tamper(
        str(services.settings.database_url),
        "DELETE FROM pumpparty_events WHERE notification_id = %s",
        position=7,
    )

    result = cli("audit", "verify")

    assert result.returncode == 1
    assert result.stdout.strip() == "FAILED at position 7: the event was removed"


def test_verify_checks_the_digests_an_auditor_kept(
    services: Services, context: CommandContext, cli: Cli
) -> None:
    append_events(services, context, 10)
    kept = cli("audit", "digest").stdout.strip()  # recorded at 10, and kept by the auditor
    append_events(services, context, 5)
    with psycopg.connect(services.url) as conn:
        row = conn.execute("SELECT hash FROM audit_chain WHERE position = 12").fetchone()
    assert row is not None
    at_12 = f"12:{bytes(row[0]).hex()}"
    forged_12 = f"12:{'0' * 64}"

    good = cli("audit", "verify", "--digest", kept, "--digest", at_12)
    bad = cli("audit", "verify", "--digest", forged_12)
    beyond = cli("audit", "verify", "--digest", f"99:{'0' * 64}")
    malformed = cli("audit", "verify", "--digest", "ten")

    assert kept.startswith("10:")
    assert good.returncode == 0 and good.stdout.startswith("ok: 15 events, head 15:")
    assert bad.returncode == 1
    assert bad.stdout.strip() == "FAILED at position 12: the digest does not match"
    assert beyond.returncode == 1
    assert beyond.stdout.strip() == "FAILED at position 99: a digested position is missing"
    assert malformed.returncode == 2


def test_a_kept_digest_counts_even_where_the_database_stores_one(
    services: Services, context: CommandContext, cli: Cli
) -> None:
    append_events(services, context, 10)
    kept = cli("audit", "digest").stdout.strip()
    position, _, digest = kept.partition(":")

    forged = cli("audit", "verify", "--digest", f"{position}:{'0' * len(digest)}")

    assert forged.returncode == 1


def test_history_lists_every_event_in_order_with_its_metadata(
    services: Services, context: CommandContext, cli: Cli
) -> None:
    counter_id = open_and_increment(services, context, 3)

    result = cli("audit", "history", str(counter_id))

    assert result.returncode == 0, result.stderr
    entries = json_lines(result.stdout)
    assert [e["version"] for e in entries] == [1, 2, 3, 4]
    assert [e["position"] for e in entries] == [1, 2, 3, 4]
    assert [e["event_type"] for e in entries] == ["Opened"] + ["Incremented"] * 3
    assert {e["actor"] for e in entries} == {"user:tester"}
    assert [e["correlation_id"] for e in entries] == ["req-RETRO-CLOCK", "req-0", "req-1", "req-2"]
    assert entries[1]["data"] == {"by": 2}
    assert entries[0]["data"]["rate"] == "0"  # decimals as strings, never floats


def test_history_of_an_unknown_aggregate_is_a_clear_error(cli: Cli) -> None:
    result = cli("audit", "history", str(uuid.uuid4()))

    assert result.returncode == 1
    assert "has no events" in result.stderr


@pytest.mark.parametrize("version", [1, 2, 4])
def test_state_at_a_version_equals_the_first_n_events_replayed(
    services: Services, context: CommandContext, cli: Cli, version: int
) -> None:
    counter_id = open_and_increment(services, context, 5)
    replayed = None
    for domain_event in list(services.event_log.events.get(counter_id))[:version]:
        replayed = domain_event.mutate(replayed)  # type: ignore[attr-defined]
    assert isinstance(replayed, Counter)

    result = cli("audit", "state", str(counter_id), "--version", str(version))

    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout)
    assert shown["version"] == replayed.version == version
    assert shown["state"]["count"] == replayed.count == 2 * (version - 1)
    assert shown["state"]["name"] == replayed.name
    assert shown["state"]["modified_on"] == replayed.modified_on.isoformat()


def test_state_at_a_time_is_the_last_version_at_or_before_it(
    services: Services, context: CommandContext, cli: Cli
) -> None:
    counter_id = open_and_increment(services, context, 5)
    at = context.occurred_at + timedelta(minutes=3, seconds=30)

    result = cli("audit", "state", str(counter_id), "--at", at.isoformat())
    naive_utc = cli("audit", "state", str(counter_id), "--at", "2026-11-25T12:02:00")
    before_it_existed = cli("audit", "state", str(counter_id), "--at", "2020-01-01T00:00:00Z")

    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["version"] == 4
    assert orjson.loads(naive_utc.stdout)["version"] == 3
    assert before_it_existed.returncode == 1 and "did not exist" in before_it_existed.stderr


def test_export_streams_every_event_in_log_order(
    services: Services, context: CommandContext, cli: Cli
) -> None:
    counter_id = open_and_increment(services, context, 2)
    append_events(services, context, 30)

    result = cli("audit", "export")

    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert [e["position"] for e in events] == list(range(1, 34))
    first = events[0]
    assert first["aggregate_id"] == str(counter_id) and first["version"] == 1
    assert first["topic"] == "tests.support.counter:Counter.Opened"
    assert first["state"]["rate"] == "0" and first["state"]["actor"] == "user:tester"
    assert "recorded_at" in first


# --- demo and openapi ----------------------------------------------------------------------


def test_openapi_prints_the_apps_document(cli: Cli) -> None:
    from api.app import create_app

    result = cli("openapi")

    assert result.returncode == 0, result.stderr
    rendered = orjson.dumps(
        create_app().openapi(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    )
    assert result.stdout.encode() == rendered + b"\n"
