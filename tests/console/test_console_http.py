"""Issue 20, item 5: the operator console over plain HTTP (the browser test drives the same
pages in Chromium).

- an anonymous visitor is sent to the sign-in page (an htmx request gets 401 problem+json
  naming it in `HX-Redirect`); a signed-in non-admin is refused (403 page, or problem+json);
- signing in runs the SIWE verify and keeps the tokens in HttpOnly, SameSite=Strict
  cookies; signing out ends the session itself;
- every POST needs the session's CSRF token (`X-Console-CSRF`), sign-in included;
- every panel renders for an admin, and what it shows comes from the read models;
- projection skip/resume and dead-letter replay/discard act and record the decision;
- no console route is in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import SimpleCookie
from uuid import UUID

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Histogram

from aggregates.base import CommandContext
from api.app import create_app
from api.console.panels import PANELS
from api.console.signals import SignalWatch
from projections.reconciliation import reconcile_and_record
from runtime.clock import FixedClock
from runtime.settings import Settings
from scripts.worker import Heartbeats
from services import dead_letters
from services.bootstrap import Services
from tests.support.console import dead_backtest, stall_audit_log
from tests.support.http import assert_problem
from tests.support.log import append_events
from tests.support.projections import catch_up
from tests.support.wallets import new_wallet, request_nonce, sign


@pytest.fixture
def admin_wallet() -> LocalAccount:
    return new_wallet()


PROXY_NETWORK = "10.0.0.0/8"
"""The console's trusted proxies in these tests: a TLS-terminating load balancer's subnet.
The test client's own peer ("testclient") is not in it."""


@pytest.fixture
def settings(settings: Settings, admin_wallet: LocalAccount) -> Settings:
    return settings.model_copy(
        update={"admin_addresses": [admin_wallet.address], "trusted_proxies": [PROXY_NETWORK]}
    )


def csrf_of(client: TestClient) -> str:
    """The CSRF token the sign-in page hands this browser (an HttpOnly cookie the page's
    HTML also carries)."""
    page = client.get("/console/sign-in")
    assert page.status_code == 200, page.text
    token = client.cookies.get("console_csrf")
    assert token and f'content="{token}"' in page.text
    return token


def open_session(client: TestClient, wallet: LocalAccount) -> httpx.Response:
    token = csrf_of(client)
    message = request_nonce(client, wallet)["message"]
    return client.post(
        "/console/session",
        json={"message": message, "signature": sign(wallet, message)},
        headers={"X-Console-CSRF": token},
    )


def cookies_set_by(response: httpx.Response) -> SimpleCookie:
    cookies = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        cookies.load(header)
    return cookies


def signed_in(client: TestClient, wallet: LocalAccount) -> dict[str, str]:
    """Sign `wallet` in to the console; the headers its page's htmx POSTs carry."""
    response = open_session(client, wallet)
    assert response.status_code == 200, response.text
    csrf = client.cookies.get("console_csrf")
    assert csrf
    return {"X-Console-CSRF": csrf, "HX-Request": "true"}


@pytest.fixture
def admin(client: TestClient, admin_wallet: LocalAccount) -> dict[str, str]:
    return signed_in(client, admin_wallet)


# --- who may come in -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/console", "/console/projections", "/console/events"])
def test_an_anonymous_visitor_is_sent_to_sign_in(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/console/sign-in"


def test_an_anonymous_htmx_request_is_told_to_sign_in(client: TestClient) -> None:
    response = client.get("/console/panels/projections", headers={"HX-Request": "true"})

    assert_problem(response, 401, "unauthenticated")
    assert response.headers["HX-Redirect"] == "/console/sign-in"


def test_a_bad_cookie_is_sent_to_sign_in(client: TestClient) -> None:
    client.cookies.set("console_access", "not.a.token", path="/console")

    response = client.get("/console", follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/console/sign-in"


def test_the_sign_in_page_offers_the_wallet_sign_in(client: TestClient) -> None:
    page = client.get("/console/sign-in")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="sign-in"' in page.text and "/console/static/sign_in.js" in page.text
    assert client.get("/console/static/sign_in.js").status_code == 200
    assert "htmx" in client.get("/console/static/htmx.min.js").text


def test_signing_in_keeps_the_tokens_in_strict_http_only_cookies(
    client: TestClient, admin_wallet: LocalAccount
) -> None:
    response = open_session(client, admin_wallet)

    assert response.status_code == 200, response.text
    assert response.json() == {"next": "/console", "roles": ["admin"]}
    cookies = cookies_set_by(response)
    assert set(cookies) == {"console_access", "console_refresh", "console_csrf"}
    for morsel in cookies.values():
        assert morsel["httponly"] is True
        assert morsel["samesite"] == "strict"
        assert morsel["path"] == "/console"
    assert "access_token" not in response.text  # never in the page's reach


def secure_flags(response: httpx.Response) -> dict[str, bool]:
    return {name: bool(morsel["secure"]) for name, morsel in cookies_set_by(response).items()}


def test_cookies_are_secure_when_a_trusted_proxy_forwards_https(
    services: Services, clock: FixedClock
) -> None:
    # The console decides Secure from the request's scheme, which a trusted proxy's
    # X-Forwarded-Proto sets: TLS ends at the load balancer, the hop to us is plain HTTP.
    app = create_app(services=services, clock=clock)
    with TestClient(app, client=("10.1.2.3", 40000)) as behind_proxy:
        page = behind_proxy.get(
            "/console/sign-in",
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"},
        )

    assert page.status_code == 200
    assert secure_flags(page) == {"console_csrf": True}


def test_a_forwarded_https_from_an_untrusted_peer_is_not_believed(client: TestClient) -> None:
    page = client.get("/console/sign-in", headers={"X-Forwarded-Proto": "https"})

    assert page.status_code == 200
    assert secure_flags(page) == {"console_csrf": False}


def test_a_non_admin_is_refused(client: TestClient) -> None:
    headers = signed_in(client, new_wallet())

    page = client.get("/console")
    fragment = client.get("/console/panels/overview", headers=headers)
    action = client.post(
        "/console/projections/audit_log/skip", content="reason=mine", headers=headers
    )

    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "Not allowed" in page.text and "admin role" in page.text
    assert_problem(fragment, 403, "forbidden")
    assert_problem(action, 403, "forbidden")


def test_a_bearer_token_alone_does_not_open_the_console(
    client: TestClient, admin_wallet: LocalAccount
) -> None:
    message = request_nonce(client, admin_wallet)["message"]
    tokens = client.post(
        "/v1/auth/verify", json={"message": message, "signature": sign(admin_wallet, message)}
    ).json()

    response = client.get(
        "/console",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        follow_redirects=False,
    )

    assert response.status_code == 303  # the console reads its own cookie, nothing else


def test_signing_out_ends_the_session_itself(
    client: TestClient, services: Services, admin_wallet: LocalAccount
) -> None:
    headers = signed_in(client, admin_wallet)
    access_token = client.cookies.get("console_access")

    response = client.post("/console/sign-out", headers=headers)
    catch_up(services)

    assert response.status_code == 204
    assert response.headers["HX-Redirect"] == "/console/sign-in"
    assert client.get("/console", follow_redirects=False).status_code == 303
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {access_token}"})
    assert_problem(me, 401, "access-token-revoked")


# --- CSRF ----------------------------------------------------------------------------------


def test_sign_in_without_the_csrf_token_is_refused(
    client: TestClient, admin_wallet: LocalAccount
) -> None:
    csrf_of(client)
    message = request_nonce(client, admin_wallet)["message"]

    response = client.post(
        "/console/session", json={"message": message, "signature": sign(admin_wallet, message)}
    )

    assert_problem(response, 403, "csrf-rejected")
    assert client.cookies.get("console_access") is None


@pytest.mark.parametrize("sent", [None, "", "someone-elses-token"])
def test_an_action_without_the_sessions_csrf_token_is_refused(
    client: TestClient,
    services: Services,
    context: CommandContext,
    admin: dict[str, str],
    sent: str | None,
) -> None:
    position = stall_audit_log(services, context)
    headers = {"HX-Request": "true"}
    if sent is not None:
        headers["X-Console-CSRF"] = sent

    response = client.post(
        "/console/projections/audit_log/skip", content="reason=forged", headers=headers
    )

    assert_problem(response, 403, "csrf-rejected")
    assert services.projections.status("audit_log").stalled_position == position


# --- panels --------------------------------------------------------------------------------


def test_every_panel_renders_for_an_admin(client: TestClient, admin: dict[str, str]) -> None:
    page = client.get("/console")

    assert page.status_code == 200, page.text
    for name, (title, _load) in PANELS.items():
        assert f'data-panel="{name}"' in page.text
        fragment = client.get(f"/console/panels/{name}", headers=admin)
        assert fragment.status_code == 200, (name, fragment.text)
        assert f"<h2>{title}</h2>" in fragment.text
        alone = client.get(f"/console/{name}")
        assert alone.status_code == 200, (name, alone.text)
        assert f'data-panel="{name}"' in alone.text


def test_an_unknown_panel_is_a_404(client: TestClient, admin: dict[str, str]) -> None:
    assert_problem(
        client.get("/console/panels/nothing", headers=admin), 404, "console-panel-not-found"
    )


def test_the_projections_panel_shows_a_stall_with_its_event_and_error(
    client: TestClient, services: Services, context: CommandContext, admin: dict[str, str]
) -> None:
    position = stall_audit_log(services, context)

    fragment = client.get("/console/panels/projections", headers=admin).text

    assert 'id="projection-audit_log" data-status="stalled"' in fragment
    assert f"Stopped at position <strong>{position}</strong>" in fragment
    assert f"handler bug on position {position}" in fragment
    assert "/console/projections/audit_log/skip" in fragment


def test_the_projections_panel_shows_a_rebuild_under_way(
    client: TestClient, services: Services, context: CommandContext, admin: dict[str, str]
) -> None:
    append_events(services, context, 4)
    catch_up(services)
    # What a rebuild's bulk leaves after its first batch: generation 2 beside the live 1.
    view = services.projections.view("audit_log", 2)
    with services.datastore.transaction(commit=True) as cursor:
        for statement in view.create_statements():
            cursor.execute(statement)
        with view.batch(cursor):
            view.record_position(2)

    fragment = client.get("/console/panels/projections", headers=admin).text

    head = services.projections.status("audit_log").head
    assert services.projections.rebuilds() == {"audit_log": 2}
    assert f"<td>generation 2: 2 / {head}</td>" in fragment


def test_the_workers_panel_shows_each_jobs_beat_and_last_error(
    client: TestClient, services: Services, admin: dict[str, str]
) -> None:
    Heartbeats(services).beat_all(["ledger_reconciliation"], 60.0, error="RuntimeError: down")

    fragment = client.get("/console/panels/workers", headers=admin).text

    assert 'id="worker-ledger_reconciliation"' in fragment
    assert "RuntimeError: down" in fragment


def test_the_reconciliation_panel_shows_the_latest_check(
    client: TestClient, services: Services, admin: dict[str, str]
) -> None:
    before = client.get("/console/panels/reconciliation", headers=admin).text
    catch_up(services)
    reconcile_and_record(services.projections.datastore, services.settings.admin_addresses)

    after = client.get("/console/panels/reconciliation", headers=admin).text

    assert 'id="reconciliation-status" class="bad">unknown<' in before
    assert 'id="reconciliation-status" class="ok">ok<' in after
    assert "Every check held." in after


def test_skipping_a_stall_records_the_reason_and_the_admin(
    client: TestClient, services: Services, context: CommandContext, admin: dict[str, str]
) -> None:
    position = stall_audit_log(services, context)

    response = client.post(
        "/console/projections/audit_log/skip", content="reason=known+bad+event", headers=admin
    )

    assert response.status_code == 200, response.text
    assert f"audit_log: skipped position {position}" in response.text
    assert services.projections.status("audit_log").stalled_position is None
    assert [s["reason"] for s in services.projections.skips("audit_log")] == ["known bad event"]
    catch_up(services)
    assert services.projections.status("audit_log").status == "caught_up"


def test_resuming_a_stall_retries_the_event(
    client: TestClient, services: Services, context: CommandContext, admin: dict[str, str]
) -> None:
    stall_audit_log(services, context)

    response = client.post(
        "/console/projections/audit_log/resume", content="reason=fix+deployed", headers=admin
    )

    assert response.status_code == 200, response.text
    assert services.projections.status("audit_log").stalled_position is None


def test_a_skip_needs_a_reason_and_a_stall(
    client: TestClient, services: Services, context: CommandContext, admin: dict[str, str]
) -> None:
    no_stall = client.post(
        "/console/projections/audit_log/skip", content="reason=why", headers=admin
    )
    stall_audit_log(services, context)
    no_reason = client.post(
        "/console/projections/audit_log/skip", content="reason=+++", headers=admin
    )

    assert_problem(no_stall, 404, "dead-letter-not-found")
    assert_problem(no_reason, 422, "reason-required")
    assert services.projections.status("audit_log").stalled_position is not None


def test_a_dead_letter_is_listed_and_replayed(
    client: TestClient, services: Services, clock: FixedClock, admin: dict[str, str]
) -> None:
    job_id = dead_backtest(services, clock, "the engine is away")

    listed = client.get("/console/panels/dead-letters", headers=admin).text
    replayed = client.post(
        f"/console/dead-letters/{job_id}/replay", content="reason=engine+back", headers=admin
    )

    assert f'id="letter-{job_id}" data-state="dead" data-kind="backtest"' in listed
    assert "the engine is away" in listed
    assert replayed.status_code == 200, replayed.text
    assert f"backtest {job_id}: replayed" in replayed.text
    assert f'id="letter-{job_id}"' not in replayed.text
    assert dead_letters.show_dead_letter(services, str(job_id)).state == "replayed"


def test_a_dead_letter_is_discarded_with_a_reason(
    client: TestClient, services: Services, clock: FixedClock, admin: dict[str, str]
) -> None:
    job_id = dead_backtest(services, clock, "bad strategy graph")

    missing = client.post(f"/console/dead-letters/{job_id}/discard", content="", headers=admin)
    discarded = client.post(
        f"/console/dead-letters/{job_id}/discard", content="reason=unfixable", headers=admin
    )

    assert_problem(missing, 422, "reason-required")
    assert discarded.status_code == 200, discarded.text
    assert dead_letters.show_dead_letter(services, str(job_id)).state == "discarded"


def test_replaying_an_unknown_letter_is_a_404(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        f"/console/dead-letters/{UUID(int=7)}/replay", content="reason=x", headers=admin
    )

    assert_problem(response, 404, "job-not-found")  # the job queue's own answer


def test_the_overview_counts_what_needs_an_operator(
    client: TestClient,
    services: Services,
    context: CommandContext,
    clock: FixedClock,
    admin: dict[str, str],
) -> None:
    stall_audit_log(services, context)
    dead_backtest(services, clock, "boom")

    fragment = client.get("/console/panels/overview", headers=admin).text

    assert '<td id="summary-stalled" class="bad">1</td>' in fragment
    # The stall is a dead letter too (`projection.audit_log`), beside the job.
    assert '<td id="summary-dead-letters" class="bad">2</td>' in fragment


def test_console_routes_are_not_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    assert not [path for path in paths if path.startswith("/console")]


# --- golden signals ------------------------------------------------------------------------


@pytest.fixture
def histogram() -> Iterator[Histogram]:
    yield Histogram(
        "console_test_seconds",
        "test",
        ["method", "route", "status"],
        registry=CollectorRegistry(),
        buckets=(0.01, 0.1, 1.0),
    )


def test_golden_signals_count_errors_and_the_p99_leaving_the_console_out(
    histogram: Histogram,
) -> None:
    watch = SignalWatch(histogram)
    first = watch.look()
    for _ in range(98):
        histogram.labels("GET", "/v1/races", "200").observe(0.005)
    histogram.labels("GET", "/v1/races", "500").observe(0.05)
    histogram.labels("GET", "/v1/races", "200").observe(0.5)
    histogram.labels("GET", "/console/panels/{name}", "200").observe(5.0)

    second = watch.look()

    assert (first.requests, first.window_seconds, first.p99_seconds) == (0, None, None)
    assert (second.requests, second.errors) == (100, 1)
    assert second.error_ratio == pytest.approx(0.01)
    assert second.p99_seconds == 0.1  # the 99th of 100 answers fell in the 0.1 s bucket
    assert second.request_rate is not None and second.request_rate > 0
