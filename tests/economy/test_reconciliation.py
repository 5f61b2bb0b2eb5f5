from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient

from projections.reconciliation import reconcile, reconcile_and_record
from projections.runner import ProjectionRunner
from services.bootstrap import Services
from tests.conftest import AUDITOR_TOKEN
from tests.economy.test_purchases import paid
from tests.support.evm_node import EvmNodeServer
from tests.support.http import bearer
from tests.support.monitor import monitor_headers
from tests.support.projections import catch_up

AUDITOR = bearer(AUDITOR_TOKEN)

ROOT = Path(__file__).resolve().parents[2]


def ledger_check(services: Services) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPPARTY_")}
    env.update(
        PUMPPARTY_DATABASE_URL=services.url, PUMPPARTY_DATA_DIR=str(services.settings.data_dir)
    )
    return subprocess.run(
        [sys.executable, "-m", "scripts.cli", "ledger", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_clean_ledger_reconciles(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    paid(client, node, value=30_000_000)
    catch_up(services)

    result = reconcile(services.projections.datastore)
    checked = ledger_check(services)

    assert result.ok and result.trial_balance_minor == 0
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok:")


def tamper(services: Services, statement: str) -> None:
    """Break a read model behind the ledger's back (what reconciliation must catch)."""
    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute(statement)


def test_a_balance_that_disagrees_with_its_entries_is_a_breach(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    paid(client, node, value=30_000_000)
    catch_up(services)
    tamper(
        services,
        "UPDATE ledger_balances SET balance_minor = balance_minor + 1 WHERE account LIKE 'user:%'",
    )

    checked = ledger_check(services)
    health = client.get("/v1/health/reconciliation", headers=AUDITOR).json()
    metrics = client.get("/metrics", headers=monitor_headers(client)).text

    assert checked.returncode == 1
    assert "balance-equals-entries" in checked.stdout
    assert health["status"] == "failing"
    assert "pumpparty_reconciliation_breaches 1.0" in metrics


def test_a_verified_purchase_without_its_grant_is_a_breach(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    paid(client, node)
    catch_up(services)
    tamper(services, "DELETE FROM entitlements")

    result = reconcile_and_record(services.projections.datastore)

    assert [b["check"] for b in result.breaches] == ["one-grant-per-verified-purchase"]
    assert client.get("/v1/health/reconciliation", headers=AUDITOR).json()["status"] == "failing"


def test_health_is_unknown_before_the_first_check(client: TestClient) -> None:
    assert client.get("/v1/health/reconciliation", headers=AUDITOR).json()["status"] == "unknown"


def test_reconciliation_health_is_for_auditors(client: TestClient) -> None:
    assert client.get("/v1/health/reconciliation").status_code == 401


def test_reconciliation_runs_while_read_models_lag(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    paid(client, node)
    ProjectionRunner(services.projections, "purchases", services.url).catch_up()

    result = reconcile_and_record(services.projections.datastore)

    # Judged at a common position, lag is not a breach and the check is not skipped.
    assert result.ok
    assert client.get("/v1/health/reconciliation", headers=AUDITOR).json()["status"] == "ok"
