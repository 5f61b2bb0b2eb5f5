"""A read model whose tables changed shape in a release is started again on upgrade.

The database is made as the previous release left it: the `generations` read model's
tables as that release declared them (before decision records, backtest reports and
model-node calls widened them), projected up to an event the old tables cannot take. The
upgrade path (`open_services` with migrations, as `pumpparty api` and `pumpparty migrate`
run it) must replace them with the declared shape, the runner must refill them from the
log, and the artifacts route must answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient
from psycopg.sql import SQL, Identifier

from aggregates.backtest_reports import BacktestReportRecord
from aggregates.base import CommandContext
from api.app import create_app
from projections.base import ProjectionView
from projections.generations import GenerationsView
from projections.rebuild import rebuild
from runtime.clock import FixedClock
from runtime.settings import Settings
from services.bootstrap import Services, open_services
from services.eventlog import UnitOfWork
from tests.support.clones import create_clone
from tests.support.projections import catch_up
from tests.support.wallets import sign_in


class PreviousGenerationsView(ProjectionView):
    """`generations` as the previous release declared it: calls keyed by position alone,
    every call and artifact of a generation (no account, no job)."""

    tables: ClassVar[dict[str, str]] = {
        "generations": """(
            generation_id uuid PRIMARY KEY,
            clone_id uuid NOT NULL,
            owner_id uuid NOT NULL,
            prompt_version text NOT NULL,
            status text NOT NULL,
            day date NOT NULL,
            rounds integer NOT NULL DEFAULT 0,
            provider text,
            model text,
            draft_number integer,
            graph_digest text,
            failure_code text,
            started_at timestamptz NOT NULL,
            finished_at timestamptz,
            position bigint NOT NULL UNIQUE
        )""",
        "generation_calls": """(
            position bigint PRIMARY KEY,
            generation_id uuid NOT NULL,
            clone_id uuid NOT NULL,
            owner_id uuid NOT NULL,
            day date NOT NULL,
            round integer NOT NULL,
            purpose text NOT NULL,
            provider text NOT NULL,
            model text NOT NULL,
            request_hash text NOT NULL,
            prompt_tokens bigint NOT NULL,
            completion_tokens bigint NOT NULL,
            cached_tokens bigint NOT NULL,
            outcome text NOT NULL,
            detail text NOT NULL,
            retry_after_ms bigint,
            duration_ms bigint NOT NULL,
            occurred_at timestamptz NOT NULL
        )""",
        "generation_artifacts": """(
            sha256 text PRIMARY KEY,
            media_type text NOT NULL,
            size_bytes integer NOT NULL,
            content bytea NOT NULL,
            first_position bigint NOT NULL
        )""",
        "generation_artifact_refs": """(
            position bigint NOT NULL,
            ordinal integer NOT NULL,
            generation_id uuid NOT NULL,
            clone_id uuid NOT NULL,
            owner_id uuid NOT NULL,
            kind text NOT NULL,
            sha256 text NOT NULL,
            round integer,
            created_at timestamptz NOT NULL,
            PRIMARY KEY (position, ordinal)
        )""",
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "generations": ["(clone_id, position)"],
        "generation_calls": ["(clone_id)", "(owner_id, day)"],
        "generation_artifact_refs": ["(clone_id, position, ordinal)", "(clone_id, sha256)"],
    }


def as_the_previous_release_made_it(services: Services) -> None:
    """Replace the live generation 1 of `generations` (and its readers' views) with the
    previous release's tables, at position zero, owned by the service role as deployed."""
    current = services.projections.view("generations", 1)
    previous = PreviousGenerationsView(services.datastore, name="generations", generation=1)
    with services.datastore.transaction(commit=True) as cursor:
        for logical in current.tables:
            cursor.execute(SQL("DROP VIEW {}").format(Identifier(logical)))
        for statement in [
            *current.drop_statements(),
            *previous.create_statements(),
            *previous.expose_statements(),
        ]:
            cursor.execute(statement)


def reader_columns(services: Services, view: str) -> dict[str, bool]:
    """The readers' view's columns, each with whether it may be NULL."""
    with services.datastore.transaction() as cursor:
        cursor.execute(
            "SELECT column_name, is_nullable = 'YES' AS nullable FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = %s",
            (view,),
        )
        return {row["column_name"]: row["nullable"] for row in cursor.fetchall()}


def rows_of(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the read model keeps, through its readers' views, in a stable order."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with services.datastore.transaction() as cursor:
        for logical in GenerationsView.tables:
            cursor.execute(SQL("SELECT * FROM {}").format(Identifier(logical)))
            found[logical] = sorted(tuple(map(str, row.values())) for row in cursor.fetchall())
    return found


def record_backtest_report(
    services: Services, context: CommandContext, clone_id: str, owner_id: str
) -> UUID:
    """A backtest job's report in the log, as `services.backtests.record_report` writes it."""
    job_id = uuid4()

    def decide(unit: UnitOfWork) -> None:
        unit.add(
            BacktestReportRecord.of(
                job_id, UUID(clone_id), UUID(owner_id), "v1", {"trades": 3, "pnl": "12.5"}
            )
        )

    services.event_log.execute(context, decide)
    return job_id


@pytest.fixture
def upgraded() -> Iterator[list[Services]]:
    """Services opened as a new release starts (migrations and projections' upgrade)."""
    opened: list[Services] = []
    yield opened
    for services in opened:
        services.close()


def test_the_previous_releases_generations_tables_are_replaced_and_refilled_from_the_log(
    client: TestClient,
    services: Services,
    settings: Settings,
    clock: FixedClock,
    context: CommandContext,
    upgraded: list[Services],
) -> None:
    as_the_previous_release_made_it(services)
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    generated = client.post(
        f"/v1/clones/{clone_id}/generate", json={"prompt": "BTC sma"}, headers=owner.headers
    )
    assert generated.status_code == 200, generated.text
    job_id = record_backtest_report(services, context, clone_id, owner.user_id)
    catch_up(services)
    # The symptom: the old tables take the generation's events, not the report.
    before = services.projections.status("generations")
    assert before.status == "stalled" and "job_id" in str(before.stalled_error)
    assert "ordinal" not in reader_columns(services, "generation_calls")

    upgraded.append(open_services(settings, run_migrations=True, clock=clock))
    new = upgraded[0]

    status = new.projections.status("generations")
    assert (status.generation, status.position, status.stalled_position) == (2, 0, None)
    calls = reader_columns(new, "generation_calls")
    assert {"ordinal", "account_id"} <= set(calls) and calls["generation_id"] is True
    assert {"account_id", "job_id"} <= set(reader_columns(new, "generation_artifact_refs"))
    with new.datastore.transaction() as cursor:
        for name in ("generation_calls__g1", "generations__g1_tracking"):
            cursor.execute("SELECT to_regclass(%s) IS NULL AS gone", (name,))
            row = cursor.fetchone()
            assert row is not None and row["gone"], name
    catch_up(new)
    with TestClient(create_app(services=new, clock=clock)) as after:
        listed = after.get(f"/v1/clones/{clone_id}/artifacts", headers=owner.headers)
        usage = after.get(f"/v1/clones/{clone_id}/usage", headers=owner.headers)

    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [item["kind"] for item in items] == ["prompt", "raw-output", "graph", "backtest-report"]
    assert items[2]["sha256"] == generated.json()["digest"]
    assert items[3]["job_id"] == str(job_id) and items[3]["generation_id"] is None
    assert usage.status_code == 200, usage.text
    assert usage.json()["total"]["calls"] == generated.json()["usage"]["calls"]
    # Every row is the log's: a rebuild from position zero finds the same rows.
    refilled = rows_of(new)
    assert all(refilled.values()), refilled
    rebuild(new.projections, "generations")
    assert rows_of(new) == refilled
    # The next start finds nothing to do.
    assert new.projections.ensure_created() == []


def test_a_database_made_by_this_release_starts_no_read_model_again(services: Services) -> None:
    positions = {s.name: s.generation for s in services.projections.statuses()}

    assert services.projections.ensure_created() == []
    assert {s.name: s.generation for s in services.projections.statuses()} == positions


def test_a_missing_index_starts_the_read_model_again_once(
    services: Services, context: CommandContext, client: TestClient
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    catch_up(services)
    with services.datastore.transaction(commit=True) as cursor:
        cursor.execute("DROP INDEX clones__g1_i0")
    clones_before = rows_of_view(services, "clones")

    assert services.projections.ensure_created() == ["clones"]
    assert services.projections.ensure_created() == []
    catch_up(services)
    assert rows_of_view(services, "clones") == clones_before
    assert clone_id in {row[0] for row in clones_before}


def rows_of_view(services: Services, view: str) -> list[tuple[str, ...]]:
    with services.datastore.transaction() as cursor:
        cursor.execute(SQL("SELECT * FROM {}").format(Identifier(view)))
        return sorted(tuple(map(str, row.values())) for row in cursor.fetchall())


def test_an_operators_rebuild_replaces_the_previous_releases_tables_too(
    client: TestClient, services: Services, context: CommandContext
) -> None:
    as_the_previous_release_made_it(services)
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    record_backtest_report(services, context, clone_id, owner.user_id)

    assert rebuild(services.projections, "generations") == 2

    assert {"ordinal", "account_id"} <= set(reader_columns(services, "generation_calls"))
    (ref,) = rows_of(services)["generation_artifact_refs"]
    assert clone_id in ref
