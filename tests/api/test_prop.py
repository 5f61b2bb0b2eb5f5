from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from aggregates.ports import Mark
from ingest.prices import PostgresPriceSource
from runtime.clock import FixedClock
from services.bootstrap import Services
from tests.conftest import AUDITOR_TOKEN, ENGINE_TOKEN, PROP_READER_TOKEN
from tests.support.http import assert_problem, bearer
from tests.support.jobs import run_job
from tests.support.owner import assert_owner_only
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, new_wallet, sign_in

ENGINE = bearer(ENGINE_TOKEN)
READER = bearer(PROP_READER_TOKEN)
OWNER_ROUTES = ["", "/positions", "/fills", "/snapshots", "/audit"]


def sign_in_admin(client: TestClient, services: Services) -> SignedIn:
    wallet = new_wallet()
    client.app.state.services.settings = services.settings.model_copy(  # type: ignore[attr-defined]
        update={"admin_addresses": [wallet.address]}
    )
    return sign_in(client, wallet)


def account_body(owner: SignedIn, **changes: Any) -> dict[str, Any]:
    return {
        "key": "RETRO-CLOCK",
        "owner_id": owner.user_id,
        "clone_id": "00000000-0000-4000-8000-0000000c1011",
        "clone_version_hash": "sha256:RETRO-CLOCK",
        "purpose": "audition",
        "starting_equity": "10000",
        "rule_set": "audition",
        **changes,
    }


def open_account(client: TestClient, admin: SignedIn, owner: SignedIn) -> str:
    response = client.post(
        "/v1/admin/prop/accounts", json=account_body(owner), headers=admin.headers
    )
    assert response.status_code == 201, response.text
    account_id: str = response.json()["account_id"]
    return account_id


def record_mark(services: Services, clock: FixedClock, asset: str, price: str) -> None:
    PostgresPriceSource(services.projections.datastore).record(
        [Mark(asset, Decimal(price), clock(), "hyperliquid")]
    )


def act(client: TestClient, account_id: str, number: int = 1, **body: Any) -> Any:
    action = {"client_action_id": f"a-{number}", "asset": "BTC", "side": "buy", "size": "1"}
    return client.post(
        f"/v1/prop/accounts/{account_id}/actions", json={**action, **body}, headers=ENGINE
    )


@pytest.fixture
def admin(client: TestClient, services: Services) -> SignedIn:
    return sign_in_admin(client, services)


@pytest.fixture
def owner(client: TestClient) -> SignedIn:
    return sign_in(client)


@pytest.fixture
def account_id(client: TestClient, admin: SignedIn, owner: SignedIn) -> str:
    return open_account(client, admin, owner)


def test_the_engine_gets_the_fill_and_the_position(
    client: TestClient, services: Services, clock: FixedClock, account_id: str
) -> None:
    record_mark(services, clock, "BTC", "100")

    response = act(client, account_id, size="2", leverage="3")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["reason"]) == ("filled", None)
    assert body["fill"]["price"] == "100.02" and body["fill"]["fee"] == "0.10002"
    assert body["fill"]["mark_source"] == "hyperliquid"
    assert body["position"] == {
        "asset": "BTC",
        "size": "2",
        "average_entry_price": "100.02",
        "leverage": "3",
        "mark_price": "100",
        "notional": "200",
        "unrealized_pnl": "-0.04",
        "margin": "66.66666667",
        "mark_source": "hyperliquid",
        "mark_observed_at": "2026-11-25T12:00:00Z",
    }
    assert body["log_position"] > 0


def test_a_rejected_action_is_answered_with_its_reason_code(
    client: TestClient, services: Services, clock: FixedClock, account_id: str
) -> None:
    record_mark(services, clock, "BTC", "100")

    body = act(client, account_id, size="1000").json()

    assert (body["status"], body["reason"], body["fill"]) == (
        "rejected",
        "order-notional-too-large",
        None,
    )
    assert body["position"]["size"] == "0"


def test_a_retry_gets_the_same_answer_and_another_body_is_a_conflict(
    client: TestClient, services: Services, clock: FixedClock, account_id: str
) -> None:
    record_mark(services, clock, "BTC", "100")
    first = act(client, account_id).json()

    again = act(client, account_id).json()
    changed = act(client, account_id, side="sell")

    assert {**again, "log_position": 0} == {**first, "log_position": 0}
    assert_problem(changed, 409, "idempotency-key-reused")


def test_actions_need_a_service_token_with_prop_write(
    client: TestClient, owner: SignedIn, account_id: str
) -> None:
    url = f"/v1/prop/accounts/{account_id}/actions"
    action = {"client_action_id": "a-1", "asset": "BTC", "side": "buy", "size": "1"}

    assert_problem(client.post(url, json=action), 401, "unauthenticated")
    assert_problem(client.post(url, json=action, headers=bearer(AUDITOR_TOKEN)), 403, "forbidden")
    assert_problem(client.post(url, json=action, headers=owner.headers), 403, "forbidden")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"size": None}, "invalid-prop-action"),
        ({"notional": "100"}, "invalid-prop-action"),
        ({"size": "0.000000001"}, "invalid-request"),
        ({"size": "-1"}, "invalid-request"),
        ({"size": "NaN"}, "invalid-request"),
        ({"side": "hold"}, "invalid-request"),
        ({"leverage": "0"}, "invalid-request"),
        ({"asset": "BTC;DROP"}, "invalid-request"),
    ],
)
def test_a_malformed_action_is_a_problem(
    client: TestClient, body: dict[str, Any], code: str
) -> None:
    # Checked before the account is even looked up, so any account id will do.
    assert_problem(act(client, str(uuid4()), **body), 422, code)


def test_an_action_on_an_unknown_account_is_not_found(client: TestClient) -> None:
    assert_problem(act(client, str(uuid4())), 404, "not-found")


def test_every_read_is_owner_only(
    client: TestClient, services: Services, owner: SignedIn, account_id: str
) -> None:
    catch_up(services)
    stranger = sign_in(client)

    for route in OWNER_ROUTES:
        assert_owner_only(
            client,
            "GET",
            f"/v1/prop/accounts/{account_id}{route}",
            owner=owner.headers,
            stranger=stranger.headers,
        )


def test_admins_and_prop_readers_read_any_account_and_the_engine_may_not(
    client: TestClient, services: Services, admin: SignedIn, account_id: str
) -> None:
    catch_up(services)

    for route in OWNER_ROUTES:
        url = f"/v1/prop/accounts/{account_id}{route}"
        assert client.get(url, headers=admin.headers).status_code == 200, route
        assert client.get(url, headers=READER).status_code == 200, route
        assert_problem(client.get(url, headers=ENGINE), 403, "forbidden")
    assert_problem(client.get(f"/v1/prop/accounts/{uuid4()}", headers=READER), 404, "not-found")


def test_the_summary_shows_the_pinned_rules_and_the_money(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, account_id: str
) -> None:
    record_mark(services, clock, "BTC", "100")
    act(client, account_id, size="2")
    catch_up(services)

    summary = client.get(f"/v1/prop/accounts/{account_id}", headers=owner.headers).json()

    assert summary["rules"]["name"] == "audition" and summary["rules"]["version"] == 1
    assert summary["rules"]["daily_loss_limit"] == "0.05"
    assert (summary["status"], summary["fills"], summary["day"]) == ("open", 1, "2026-11-25")
    assert summary["fees_paid"] == "0.10002"
    assert Decimal(summary["equity"]) == (
        Decimal(summary["starting_equity"])
        + Decimal(summary["realized_pnl"])
        + Decimal(summary["unrealized_pnl"])
        - Decimal(summary["fees_paid"])
    )


def test_positions_list_every_open_position_at_its_mark(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, account_id: str
) -> None:
    record_mark(services, clock, "BTC", "100")
    record_mark(services, clock, "ETH", "10")
    act(client, account_id, 1, size="2")
    act(client, account_id, 2, asset="ETH", side="sell", size="10", leverage="2")
    catch_up(services)

    items = client.get(f"/v1/prop/accounts/{account_id}/positions", headers=owner.headers).json()[
        "items"
    ]

    assert [(i["asset"], i["size"], i["margin"]) for i in items] == [
        ("BTC", "2", "200"),
        ("ETH", "-10", "50"),
    ]


def test_fills_are_paginated_oldest_first(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, account_id: str
) -> None:
    for number in range(1, 4):
        record_mark(services, clock, "BTC", str(100 + number))
        act(client, account_id, number)
        clock.advance(seconds=60)
    catch_up(services)
    url = f"/v1/prop/accounts/{account_id}/fills"

    first = client.get(url, params={"limit": 2}, headers=owner.headers).json()
    second = client.get(
        url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=owner.headers
    ).json()

    assert [f["mark_price"] for f in first["items"]] == ["101", "102"]
    assert [f["number"] for f in second["items"]] == [3] and second["next_cursor"] is None


def test_admin_controls_are_events_with_the_admin_as_actor(
    client: TestClient,
    services: Services,
    clock: FixedClock,
    admin: SignedIn,
    owner: SignedIn,
    account_id: str,
) -> None:
    record_mark(services, clock, "BTC", "100")
    act(client, account_id, 1)
    controls = f"/v1/admin/prop/accounts/{account_id}"
    reason = {"reason": "RETRO-CLOCK review"}

    frozen = client.post(f"{controls}/freeze", json=reason, headers=admin.headers)
    while_frozen = act(client, account_id, 2).json()
    unfrozen = client.post(f"{controls}/unfreeze", json=reason, headers=admin.headers)
    flattened = client.post(f"{controls}/flatten", json=reason, headers=admin.headers)
    closed = client.post(f"{controls}/close", json=reason, headers=admin.headers)
    again = client.post(f"{controls}/freeze", json=reason, headers=admin.headers)
    catch_up(services)

    assert [r.json()["status"] for r in (frozen, unfrozen, flattened, closed)] == [
        "frozen",
        "open",
        "open",
        "closed",
    ]
    assert while_frozen["reason"] == "account-frozen"
    assert_problem(again, 409, "prop-account-closed")
    audit = client.get(f"/v1/prop/accounts/{account_id}/audit", headers=owner.headers).json()
    by_admin = [e["event_type"] for e in audit["items"] if e["actor"] == f"user:{admin.user_id}"]
    assert by_admin == ["Opened", "Frozen", "Unfrozen", "Flattened", "Closed"]


def test_admin_controls_need_the_admin_role(
    client: TestClient, owner: SignedIn, account_id: str
) -> None:
    response = client.post(
        f"/v1/admin/prop/accounts/{account_id}/freeze", json={"reason": "x"}, headers=owner.headers
    )

    assert_problem(response, 403, "forbidden")


def test_unfreezing_an_open_account_is_a_conflict(
    client: TestClient, admin: SignedIn, account_id: str
) -> None:
    response = client.post(
        f"/v1/admin/prop/accounts/{account_id}/unfreeze",
        json={"reason": "x"},
        headers=admin.headers,
    )

    assert_problem(response, 409, "prop-account-not-frozen")


def test_opening_is_idempotent_by_key(
    client: TestClient, admin: SignedIn, owner: SignedIn, account_id: str
) -> None:
    again = client.post("/v1/admin/prop/accounts", json=account_body(owner), headers=admin.headers)
    changed = client.post(
        "/v1/admin/prop/accounts",
        json=account_body(owner, starting_equity="20000"),
        headers=admin.headers,
    )
    unknown = client.post(
        "/v1/admin/prop/accounts",
        json=account_body(owner, key="other", rule_set="casino"),
        headers=admin.headers,
    )

    assert again.status_code == 201 and again.json()["account_id"] == account_id
    assert_problem(changed, 409, "idempotency-key-reused")
    assert_problem(unknown, 422, "unknown-rule-set")


def test_the_equity_curve_moves_only_when_the_equity_does(
    client: TestClient,
    services: Services,
    clock: FixedClock,
    admin: SignedIn,
    owner: SignedIn,
    account_id: str,
) -> None:
    record_mark(services, clock, "BTC", "100")
    act(client, account_id, size="2")  # filled at 100.02, fee 0.10002
    clock.advance(minutes=5)
    record_mark(services, clock, "BTC", "110")
    catch_up(services)
    assert run_job(services, "prop_mark_to_market", clock) == 1
    clock.advance(minutes=5)
    record_mark(services, clock, "BTC", "110")  # a newer mark at the same price
    assert run_job(services, "prop_mark_to_market", clock) == 0
    clock.advance(minutes=5)
    closed = client.post(
        f"/v1/admin/prop/accounts/{account_id}/close",
        json={"reason": "RETRO-CLOCK done"},
        headers=admin.headers,
    )
    assert closed.status_code == 200, closed.text
    catch_up(services)
    url = f"/v1/prop/accounts/{account_id}/snapshots"

    first = client.get(url, params={"limit": 2}, headers=owner.headers).json()
    rest = client.get(url, params={"cursor": first["next_cursor"]}, headers=owner.headers).json()
    summary = client.get(f"/v1/prop/accounts/{account_id}", headers=owner.headers).json()

    curve = first["items"] + rest["items"]
    # Opened, Filled, Marked at 110, Flattened at close: the unmoved mark added nothing.
    assert [(point["taken_at"][11:16], point["equity"]) for point in curve] == [
        ("12:00", "10000"),
        ("12:00", "9999.85998"),
        ("12:05", "10019.85998"),
        ("12:15", "10019.706002"),
    ]
    assert [(p["realized_pnl"], p["fees_paid"]) for p in curve] == [
        ("0", "0"),
        ("0", "0.10002"),
        ("0", "0.10002"),
        ("19.916", "0.209998"),
    ]
    for point in curve:
        money = {key: Decimal(point[key]) for key in point if key != "taken_at"}
        assert money["equity"] == money["balance"] + money["unrealized_pnl"]
        assert money["balance"] == Decimal("10000") + money["realized_pnl"] - money["fees_paid"]
    last = curve[-1]
    assert (last["equity"], last["realized_pnl"], last["fees_paid"]) == (
        summary["equity"],
        summary["realized_pnl"],
        summary["fees_paid"],
    )
    assert (last["unrealized_pnl"], last["margin_used"], last["gross_exposure"]) == ("0", "0", "0")
    assert rest["next_cursor"] is None and summary["status"] == "closed"
