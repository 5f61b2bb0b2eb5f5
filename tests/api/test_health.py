from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from aggregates.base import CommandContext
from projections.runner import ProjectionRunner
from runtime.clock import FixedClock
from services.bootstrap import Services
from tests.support.clones import make_admin
from tests.support.counter import new_counter
from tests.support.http import assert_problem
from tests.support.monitor import monitor_headers
from tests.support.wallets import sign_in


def test_health_reports_the_log_head(
    client: TestClient, services: Services, context: CommandContext
) -> None:
    services.event_log.execute(context, lambda unit: unit.add(new_counter("RETRO-CLOCK")))

    response = client.get("/v1/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "head_position": 1}


def test_projection_health_shows_lag_then_caught_up(
    client: TestClient, services: Services, context: CommandContext
) -> None:
    services.event_log.execute(context, lambda unit: unit.add(new_counter("RETRO-CLOCK")))

    admin = monitor_headers(client)
    before = client.get("/v1/health/projections", headers=admin).json()
    ProjectionRunner(services.projections, "audit_log", services.url).catch_up()
    after = client.get("/v1/health/projections", headers=admin).json()

    assert {p["name"]: (p["lag"], p["status"]) for p in before}["audit_log"] == (1, "catching_up")
    assert {p["name"]: (p["lag"], p["status"]) for p in after}["audit_log"] == (0, "caught_up")


def test_worker_health_marks_late_heartbeats(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    with services.projections.datastore.transaction(commit=True) as cursor:
        cursor.execute(
            "INSERT INTO worker_heartbeats (job, process, interval_seconds, beat_at, last_outcome)"
            " VALUES ('fresh', 'host:1', 5, %s, 'admitted 2; 5 seats free'),"
            " ('stale', 'host:1', 5, %s, NULL)",
            (clock() - timedelta(seconds=4), clock() - timedelta(seconds=60)),
        )

    workers = client.get("/v1/health/workers", headers=monitor_headers(client)).json()

    assert {w["job"]: (w["status"], w["last_outcome"]) for w in workers} == {
        "fresh": ("alive", "admitted 2; 5 seats free"),
        "stale": ("late", None),
    }


def test_metrics_expose_latency_lag_and_appends(client: TestClient, services: Services) -> None:
    admin = monitor_headers(client)
    client.get("/v1/health")

    text = client.get("/metrics", headers=admin).text

    assert (
        "pumpparty_http_request_duration_seconds_count"
        '{method="GET",route="/v1/health",status="200"} 1.0' in text
    )
    assert 'pumpparty_projection_lag_events{projection="audit_log"} 0.0' in text
    assert "pumpparty_events_appended_total 0.0" in text


def test_request_id_is_made_and_a_valid_client_id_kept_beside_it(client: TestClient) -> None:
    given = client.get("/v1/health", headers={"X-Request-ID": "req-RETRO-CLOCK"})
    made = client.get("/v1/health")
    refused = client.get("/v1/health", headers={"X-Request-ID": "bad id with spaces"})

    assert given.headers["x-client-request-id"] == "req-RETRO-CLOCK"
    assert len(given.headers["x-request-id"]) == 36
    assert len(made.headers["x-request-id"]) == 36
    assert "x-client-request-id" not in made.headers
    assert "x-client-request-id" not in refused.headers
    assert refused.headers["x-request-id"] != "bad id with spaces"


def test_health_details_need_an_admin_or_the_health_scope(
    client: TestClient, services: Services
) -> None:
    details = ["/v1/health/projections", "/v1/health/workers", "/v1/health/ingestion", "/metrics"]
    user = sign_in(client)
    monitor = monitor_headers(client)
    admin = make_admin(client, services)

    assert client.get("/v1/health").status_code == 200
    for path in details:
        assert_problem(client.get(path), 401, "unauthenticated")
        assert_problem(client.get(path, headers=user.headers), 403, "forbidden")
        assert client.get(path, headers=monitor).status_code == 200, path
        assert client.get(path, headers=admin.headers).status_code == 200, path
