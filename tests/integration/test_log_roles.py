"""A log its own role cannot rewrite (issue 15, M5).

The service runs as a role that may append to the log and read it, and no more: it owns
none of the log's tables, so it can neither change a row nor switch off the triggers that
refuse changes; the chain is written by the owner's trigger function alone; snapshots are
never changed, and one it did not seal is not used. Each test here performs the attack
with the service's own credentials (`services.url`); `database_url` is the owner's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict

from aggregates.base import CommandContext
from aggregates.sessions import Session
from api.tokens import AccessTokens, session_of
from projections.audit_chain import record_digest, verify
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from runtime.clock import FixedClock
from runtime.database import SERVICE_ROLE, service_url_for
from runtime.schema import EVENTS_TABLE, LOG_GRANTS, SNAPSHOTS_TABLE, RoleError
from runtime.settings import Settings
from services.bootstrap import Services, migrate
from tests.support.log import append_events, checksum
from tests.support.wallets import sign_in

REPO = Path(__file__).resolve().parents[2]
REFUSED = "permission denied|must be owner"
"""Refused for want of a privilege, before any trigger is reached."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Room for the fifty refreshes that make a session take a snapshot."""
    return settings.model_copy(update={"auth_rate_limit": "1000/minute"})


def one(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def head(url: str) -> int:
    return int(one(url, f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}"))


def test_the_service_runs_as_its_own_role_which_owns_no_part_of_the_log(
    services: Services, database_url: str
) -> None:
    role = one(services.url, "SELECT current_user")
    superuser = one(services.url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    owners = {table: owner_of(database_url, table) for table in LOG_GRANTS}

    assert (role, superuser) == (SERVICE_ROLE, False)
    assert SERVICE_ROLE not in owners.values()
    # Its projections' tables are its own: rebuilds create and drop them.
    assert owner_of(database_url, "audit_log__g1") == SERVICE_ROLE


def owner_of(url: str, table: str) -> str:
    return str(one(url, "SELECT tableowner FROM pg_tables WHERE tablename = %s", table))


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param("UPDATE {events} SET topic = 'x'", id="update-events"),
        pytest.param("DELETE FROM {events}", id="delete-events"),
        pytest.param("TRUNCATE {events}", id="truncate-events"),
        pytest.param("ALTER TABLE {events} DISABLE TRIGGER USER", id="disable-triggers"),
        pytest.param("ALTER TABLE {events} DISABLE TRIGGER append_only", id="disable-one-trigger"),
        pytest.param("DROP TRIGGER append_only ON {events}", id="drop-trigger"),
        pytest.param("DROP TABLE {events}", id="drop-events"),
        pytest.param(
            "INSERT INTO {events} (notification_id, originator_id, originator_version, topic,"
            " state) VALUES ({next}, gen_random_uuid(), 1, 'x', '\\x')",
            id="choose-a-position",
        ),
        pytest.param(
            "INSERT INTO audit_chain (position, hash) VALUES ({next}, '\\x00')",
            id="plant-a-link",
        ),
        pytest.param("UPDATE audit_chain SET hash = '\\x00'", id="update-chain"),
        pytest.param("DELETE FROM audit_digests", id="delete-digests"),
        pytest.param("UPDATE {snapshots} SET state = state", id="update-snapshots"),
        pytest.param("DELETE FROM {snapshots}", id="delete-snapshots"),
        pytest.param("TRUNCATE {snapshots}", id="truncate-snapshots"),
        pytest.param("ALTER TABLE {snapshots} DISABLE TRIGGER USER", id="snapshot-triggers"),
        pytest.param("SET session_replication_role = replica", id="replica-mode"),
        pytest.param("DELETE FROM schema_migrations", id="forget-migrations"),
    ],
)
def test_the_service_role_cannot_rewrite_the_log(
    services: Services, context: CommandContext, attack: str
) -> None:
    append_events(services, context, 120)
    record_digest(services.url)
    before = verify(services.url)
    statement = attack.format(
        events=EVENTS_TABLE, snapshots=SNAPSHOTS_TABLE, next=head(services.url) + 1
    )

    with (
        psycopg.connect(services.url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match=REFUSED),
    ):
        conn.execute(statement)

    # Nothing changed, and the log takes the next append as before.
    append_events(services, context, 1)
    after = verify(services.url)
    assert before.ok and after.ok and after.checked == before.checked + 1


def test_a_temp_table_cannot_stand_in_for_the_chain(services: Services) -> None:
    """Unqualified names in a trigger would find the caller's temp table first."""
    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE audit_chain (position bigint, hash bytea)")
        conn.execute(
            "SELECT pumpparty_insert_events(ARRAY[%s]::uuid[], ARRAY[1::bigint],"
            " ARRAY['tests:Planted'], ARRAY[%s::bytea])",
            (uuid4(), b"{}"),
        )
        diverted = one_in(conn, "SELECT count(*) FROM pg_temp.audit_chain")

    assert diverted == 0
    assert verify(services.url).ok
    assert one(services.url, "SELECT count(*) FROM public.audit_chain") == 1


def one_in(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_only_the_chains_own_hashes_are_kept_as_digests(
    services: Services, context: CommandContext
) -> None:
    append_events(services, context, 3)

    kept = record_digest(services.url)
    with (
        psycopg.connect(services.url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute("INSERT INTO audit_digests (position, hash) VALUES (2, '\\x00')")

    assert kept is not None and kept.position == 3
    assert verify(services.url).ok


def test_a_snapshot_written_with_database_credentials_is_not_used(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    """The issue's attack: a session snapshot saying the session is someone else's. It can
    no longer be edited in place, and one inserted (the role may insert snapshots) is not
    sealed with the service's key, so the session is rebuilt from what the log says."""
    victim = sign_in(client)
    attacker = sign_in(client)
    token = attacker.refresh_token
    for _ in range(50):  # Session.snapshot_interval: a snapshot at version 50
        response = client.post("/v1/auth/refresh", json={"refresh_token": token})
        assert response.status_code == 200, response.text
        token = response.json()["refresh_token"]
    session_id = session_of(token)
    assert session_id is not None
    session: Any = services.event_log.repository.get(session_id)
    taken = one(
        services.url,
        f"SELECT count(*) FROM {SNAPSHOTS_TABLE} WHERE originator_id = %s",
        session_id,
    )
    assert (session.version, taken) == (51, 1)

    # What anyone with the service role's password can write: the library's own snapshot
    # of the session at its latest version, naming the victim.
    session.user_id = UUID(victim.user_id)
    forged = services.event_log.mapper.to_stored_event(Session.Snapshot.take(session))
    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {SNAPSHOTS_TABLE} (originator_id, originator_version, topic, state)"
            " VALUES (%s, %s, %s, %s)",
            (forged.originator_id, forged.originator_version, forged.topic, forged.state),
        )
    refreshed = client.post("/v1/auth/refresh", json={"refresh_token": token})
    store: Any = services.event_log.snapshots
    latest_usable = [s.originator_version for s in store.get(session_id, desc=True, limit=1)]

    assert refreshed.status_code == 200, refreshed.text
    claims = AccessTokens.from_settings(services.settings).verify(
        refreshed.json()["access_token"], clock()
    )
    assert str(claims.user_id) == attacker.user_id != victim.user_id
    assert latest_usable == [50]  # the forged one at 51 is passed over, the sealed one used


def test_commands_projections_rebuilds_and_verify_work_as_the_service_role(
    services: Services, context: CommandContext, tmp_path: Path
) -> None:
    append_events(services, context, 120)
    ProjectionRunner(services.projections, "audit_log", services.url, batch_size=50).catch_up()
    live = checksum(services.url)

    generation = rebuild(services.projections, "audit_log", batch_size=50)
    again = rebuild(services.projections, "audit_log", batch_size=50)

    assert (generation, again) == (2, 3)
    assert checksum(services.url) == live and live[0] == 120
    # The auditor's command given only the service's credentials: no owner's URL at all.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPPARTY_")}
    env.update(PUMPPARTY_SERVICE_DATABASE_URL=services.url, PUMPPARTY_DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "scripts.cli", "audit", "verify"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 120 events")


def test_the_service_role_holds_exactly_its_grants(services: Services) -> None:
    privileges = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
    held = {
        table: [
            p
            for p in privileges
            if one(services.url, "SELECT has_table_privilege(%s, %s)", table, p)
        ]
        for table in LOG_GRANTS
    }
    inserts_by_column = one(
        services.url,
        "SELECT array_agg(attname ORDER BY attnum) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0"
        " AND has_column_privilege(attrelid, attnum, 'INSERT')",
        EVENTS_TABLE,
    )
    anyone_appends = one(
        services.url,
        "SELECT has_function_privilege('public',"
        " 'pumpparty_insert_events(uuid[], bigint[], text[], bytea[])', 'EXECUTE')",
    )

    assert held == {
        EVENTS_TABLE: ["SELECT"],
        SNAPSHOTS_TABLE: ["SELECT", "INSERT"],
        "audit_chain": ["SELECT"],
        "audit_digests": ["SELECT", "INSERT"],
        "schema_migrations": ["SELECT"],
    }
    assert inserts_by_column == ["originator_id", "originator_version", "topic", "state"]
    assert anyone_appends is False


@pytest.fixture
def superuser_role(database_url: str) -> Iterator[str]:
    name = f"t_super_{uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN SUPERUSER")
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE {name}")


def test_migrate_refuses_a_service_role_that_could_rewrite_the_log(
    database_url: str, superuser_role: str
) -> None:
    with pytest.raises(RoleError, match="owner"):
        migrate(database_url, database_url)
    with pytest.raises(RoleError, match="superuser"):
        migrate(database_url, service_url_for(database_url, superuser_role))


def test_migrate_will_not_run_beside_code_the_service_role_planted(
    services: Services, database_url: str
) -> None:
    """The role may create tables in `public` (its projections), so it can create functions
    there too: one that beats a built-in on overload resolution would run as the owner."""
    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION public.convert_to(text, text) RETURNS bytea LANGUAGE sql"
            " AS 'SELECT NULL::bytea'"
        )

    with pytest.raises(RoleError, match=r"convert_to\(text,text\)"):
        migrate(database_url)


def test_migrate_hands_projection_tables_made_by_the_owner_to_the_service_role(
    services: Services, context: CommandContext, database_url: str
) -> None:
    """A database from before the split: the owner made the projections' tables."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"REASSIGN OWNED BY {SERVICE_ROLE} TO current_user")
    assert owner_of(database_url, "audit_log__g1") != SERVICE_ROLE

    migrate(database_url)
    append_events(services, context, 10)

    assert rebuild(services.projections, "audit_log") == 2
    assert checksum(services.url)[0] == 10


def test_the_service_url_is_derived_from_the_owners() -> None:
    """Same server and database; a password derived from the owner's, so every process
    given the owner's URL agrees on it, and it tells nothing of the owner's."""
    owner = "postgresql://ledger:s3cret@db.internal:5433/pumpparty"

    service = conninfo_to_dict(service_url_for(owner))
    trusted = conninfo_to_dict(service_url_for("postgresql://postgres@127.0.0.1:5432/postgres"))

    assert service["user"] == SERVICE_ROLE
    assert (service["host"], service["port"], service["dbname"]) == (
        "db.internal",
        "5433",
        "pumpparty",
    )
    assert service["password"] == conninfo_to_dict(service_url_for(owner))["password"]
    assert len(str(service["password"])) == 64 and "s3cret" not in str(service["password"])
    assert "password" not in trusted
    assert service_url_for(service_url_for(owner)) == service_url_for(owner)
