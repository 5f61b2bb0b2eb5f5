"""Issue 15, L7: `/v1/health/reconciliation` never shows an old answer as current. When the
last completed check is older than `PUMPPARTY_RECONCILIATION_STALE_AFTER` (by default three
reconciliation intervals) the answer is `stale`, with the check's age."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from projections.reconciliation import reconcile_and_record
from runtime.settings import Settings
from services.bootstrap import Services
from tests.conftest import AUDITOR_TOKEN
from tests.support.http import bearer

AUDITOR = bearer(AUDITOR_TOKEN)


def health(client: TestClient) -> dict[str, Any]:
    response = client.get("/v1/health/reconciliation", headers=AUDITOR)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def age_latest_check(services: Services, seconds: int) -> None:
    """As if the checker had stopped `seconds` ago (the steady-traffic case, or a dead job)."""
    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE reconciliation_checks SET checked_at = checked_at - make_interval(secs => %s)",
            (seconds,),
        )


def test_an_old_check_is_stale_with_its_age(client: TestClient, services: Services) -> None:
    reconcile_and_record(services.projections.datastore)
    fresh = health(client)
    age_latest_check(services, 10 * 60)

    stale = health(client)

    assert fresh["status"] == "ok"
    assert 0 <= fresh["age_seconds"] < 60
    assert fresh["stale_after_seconds"] == 3 * services.settings.reconciliation_interval
    assert stale["status"] == "stale"  # before: "ok", for ever
    assert 10 * 60 <= stale["age_seconds"] < 11 * 60
    assert stale["checked_at"] is not None and stale["trial_balance_minor"] == "0"


def test_a_new_check_makes_it_current_again(client: TestClient, services: Services) -> None:
    reconcile_and_record(services.projections.datastore)
    age_latest_check(services, 3600)
    assert health(client)["status"] == "stale"

    reconcile_and_record(services.projections.datastore)

    answer = health(client)
    assert answer["status"] == "ok"
    assert answer["age_seconds"] < 60


def test_a_stale_failing_check_keeps_its_breaches(client: TestClient, services: Services) -> None:
    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO reconciliation_checks (checked_at, ok, trial_balance_minor, breaches)"
            " VALUES (now() - interval '1 hour', false, 5,"
            ' \'[{"check": "trial-balance", "total_minor": 5}]\')'
        )

    answer = health(client)

    assert answer["status"] == "stale"
    assert answer["breaches"] == [{"check": "trial-balance", "total_minor": 5}]


def test_no_check_yet_is_unknown(client: TestClient) -> None:
    answer = health(client)

    assert answer["status"] == "unknown"
    assert answer["age_seconds"] is None


class TestTheThreshold:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={"reconciliation_interval": 30.0, "reconciliation_stale_after": 7200.0}
        )

    def test_is_a_setting(self, client: TestClient, services: Services) -> None:
        reconcile_and_record(services.projections.datastore)
        age_latest_check(services, 3600)
        within = health(client)
        age_latest_check(services, 3601)

        beyond = health(client)

        assert within["status"] == "ok" and within["stale_after_seconds"] == 7200
        assert beyond["status"] == "stale"
