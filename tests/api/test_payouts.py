"""Payout authorization through HTTP: a settled race's payouts wait in pending transfers
until admins other than the maker approve the table they saw; then they post at once.
Rejected, they are voided and the race may be settled again or voided; the auditor's
checks catch each rule broken behind the ledger's back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from projections.reconciliation import reconcile_and_record
from runtime.clock import FixedClock
from runtime.settings import Settings
from services.bootstrap import Services
from tests.support.clones import configure
from tests.support.http import assert_problem
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.races import USDC, admins, balance, buy, fund, members, payout_of, schedule
from tests.support.wallets import SignedIn, sign_in

HOUR = timedelta(hours=1)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Long-lived access tokens (races run for hours on the test clock); two approvers
    from 5 USDC of payouts."""
    return settings.model_copy(
        update={"access_token_ttl": 72 * 3600, "payout_dual_approval_minor": 5 * USDC}
    )


def settled_race(
    client: TestClient, services: Services, clock: FixedClock, maker: SignedIn
) -> tuple[str, SignedIn, str]:
    """A race settled by `maker` by hand: a fan staked 4 on the winner A and 6 on B (a dead
    heat of two idle entrants would split; A's owner is not the fan). Answers the race,
    the fan, and the winner."""
    a, b = members(services, client, 2, clock())
    start = clock()
    race_id = schedule(client, maker, start)["race_id"]
    path = f"/v1/admin/races/{race_id}"
    client.post(f"{path}/open", json={"reason": "sales"}, headers=maker.headers)
    fan = sign_in(client)
    fund(services, fan, 10 * USDC, clock())
    assert buy(client, fan, race_id, a, "4", "on-a").status_code == 201
    assert buy(client, fan, race_id, b, "6", "on-b").status_code == 201
    clock.now = start + 3 * HOUR
    for step in ("close", "start", "finish"):
        done = client.post(f"{path}/{step}", json={"reason": step}, headers=maker.headers)
        assert done.status_code == 200, done.text
    catch_up(services)
    client.post(f"{path}/amend", json={"disqualified": [b], "reason": "x"}, headers=maker.headers)
    clock.advance(minutes=11)
    for step in ("official", "settle"):
        done = client.post(f"{path}/{step}", json={"reason": step}, headers=maker.headers)
        assert done.status_code == 200, done.text
    catch_up(services)
    return race_id, fan, a


def act(
    client: TestClient, admin: SignedIn, payout: dict[str, Any], action: str, **body: Any
) -> Any:
    return client.post(
        f"/v1/admin/payouts/{payout['payout_id']}/{action}",
        json=body or {"reason": action},
        headers=admin.headers,
    )


def test_two_admins_other_than_the_maker_authorize_and_the_payout_posts(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    maker, first, second = admins(client, services, 3)
    race_id, fan, _ = settled_race(client, services, clock, maker)
    payout = payout_of(client, first, race_id)
    # A won alone with 4 of a 10 pool: net 8.5, profit 4.5, 1.125 per 1 -> 2.12; paid 8.48.
    assert (payout["status"], payout["total_minor"], payout["required_approvals"]) == (
        "awaiting_approval",
        "8480000",
        2,
    )
    assert [(line["user_id"], line["amount_minor"]) for line in payout["table"]] == [
        (fan.user_id, "8480000")
    ]
    assert balance(client, maker, f"user:{fan.user_id}") == 0
    incoming = client.get(
        f"/v1/admin/ledger/accounts/user:{fan.user_id}", headers=maker.headers
    ).json()
    assert incoming["incoming_minor"] == "8480000"
    digest = payout["table_digest"]

    assert_problem(
        act(client, maker, payout, "approve", digest=digest), 403, "maker-cannot-approve"
    )
    changed = act(client, first, payout, "approve", digest="0" * 64)
    assert_problem(changed, 409, "payout-table-changed")
    for _ in range(2):  # the same admin twice counts once
        assert act(client, first, payout, "approve", digest=digest).status_code == 200
    assert_problem(act(client, first, payout, "post"), 409, "approvals-missing")
    assert act(client, second, payout, "approve", digest=digest).status_code == 200
    posted = act(client, second, payout, "post")
    assert posted.json()["status"] == "posted", posted.text
    catch_up(services)

    assert balance(client, maker, f"user:{fan.user_id}") == 8_480_000
    assert balance(client, maker, f"race:{race_id}:escrow") == 0
    assert balance(client, maker, "treasury:takeout") == 1_500_000
    assert balance(client, maker, "treasury:breakage") == 20_000
    assert client.get(f"/v1/races/{race_id}").json()["status"] == "paid"
    assert_problem(act(client, second, payout, "post"), 409, "payout-not-awaiting-approval")
    assert (
        reconcile_and_record(
            services.projections.datastore, services.settings.admin_addresses
        ).breaches
        == []
    )


def test_an_approval_lapses_after_its_ttl_and_never_moves_money(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    maker, first, second = admins(client, services, 3)
    race_id, fan, _ = settled_race(client, services, clock, maker)
    payout = payout_of(client, first, race_id)
    act(client, first, payout, "approve", digest=payout["table_digest"])
    clock.advance(hours=25)  # past the 24 h TTL
    act(client, second, payout, "approve", digest=payout["table_digest"])

    assert_problem(act(client, second, payout, "post"), 409, "approvals-missing")
    assert act(client, first, payout, "approve", digest=payout["table_digest"]).status_code == 200
    assert act(client, second, payout, "post").status_code == 200
    catch_up(services)
    assert balance(client, maker, f"user:{fan.user_id}") == 8_480_000


def test_a_rejected_payout_is_voided_and_the_race_can_be_voided_and_refunded(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    maker, checker = admins(client, services, 2)
    race_id, fan, _ = settled_race(client, services, clock, maker)
    payout = payout_of(client, checker, race_id)

    rejected = act(client, checker, payout, "reject")
    assert rejected.json()["status"] == "rejected", rejected.text
    catch_up(services)
    race = client.get(f"/v1/races/{race_id}").json()
    assert race["status"] == "official"
    assert balance(client, maker, f"race:{race_id}:escrow") == 10 * USDC
    assert run_job(services, "race_calendar", clock) == 0  # admins decide what comes next

    voided = client.post(
        f"/v1/admin/races/{race_id}/void", json={"reason": "disputed"}, headers=checker.headers
    )
    assert voided.status_code == 200, voided.text
    catch_up(services)
    assert balance(client, maker, f"user:{fan.user_id}") == 10 * USDC
    assert balance(client, maker, f"race:{race_id}:escrow") == 0
    assert balance(client, maker, "treasury:takeout") == 0
    assert (
        reconcile_and_record(
            services.projections.datastore, services.settings.admin_addresses
        ).breaches
        == []
    )


def test_a_rejected_payout_may_be_settled_again(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    maker, checker = admins(client, services, 2)
    configure(client, payout_dual_approval_minor=100 * USDC)
    race_id, fan, _ = settled_race(client, services, clock, maker)
    first = payout_of(client, checker, race_id)
    act(client, checker, first, "reject")
    catch_up(services)

    again = client.post(
        f"/v1/admin/races/{race_id}/settle", json={"reason": "again"}, headers=maker.headers
    )
    assert again.status_code == 200, again.text
    catch_up(services)
    second = payout_of(client, checker, race_id)
    assert second["payout_id"] != first["payout_id"]
    assert second["table_digest"] == first["table_digest"]  # the result cannot change
    act(client, checker, second, "approve", digest=second["table_digest"])
    assert act(client, checker, second, "post").status_code == 200
    catch_up(services)
    assert balance(client, maker, f"user:{fan.user_id}") == 8_480_000
    assert (
        reconcile_and_record(
            services.projections.datastore, services.settings.admin_addresses
        ).breaches
        == []
    )


def test_payout_routes_are_for_admins(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    maker, checker = admins(client, services, 2)
    race_id, fan, _ = settled_race(client, services, clock, maker)
    payout = payout_of(client, checker, race_id)
    for action, body in (
        ("approve", {"digest": payout["table_digest"]}),
        ("post", {}),
        ("reject", {}),
    ):
        refused = act(client, fan, payout, action, **body)
        assert_problem(refused, 403, "forbidden")
    assert_problem(client.get("/v1/admin/payouts", headers=fan.headers), 403, "forbidden")
    listed = client.get(
        "/v1/admin/payouts", params={"status": "awaiting_approval"}, headers=checker.headers
    ).json()["items"]
    assert [p["payout_id"] for p in listed] == [payout["payout_id"]]
    bad = act(client, checker, payout, "approve", digest="not-hex")
    assert_problem(bad, 422, "invalid-request")
    unknown = client.post(
        "/v1/admin/payouts/00000000-0000-0000-0000-000000000000/approve",
        json={"digest": "0" * 64},
        headers=checker.headers,
    )
    assert_problem(unknown, 404, "not-found")


@pytest.mark.parametrize(
    ("tampering", "check"),
    [
        (
            "UPDATE payouts SET approvals = '[]'::jsonb WHERE status = 'posted'",
            "payout-authorized-before-posting",
        ),
        (
            "UPDATE payouts SET maker = approvals->0->>'approver' WHERE status = 'posted'",
            "payout-authorized-before-posting",
        ),
        (
            "UPDATE payouts SET approval_ttl_seconds = 0 WHERE status = 'posted'",
            "payout-authorized-before-posting",
        ),
        (
            "UPDATE payouts SET resolved_position = 0 WHERE status = 'posted'",
            "payout-authorized-before-posting",
        ),
        (
            "DELETE FROM ledger_entries WHERE transfer_id IN"
            " (SELECT transfer_id FROM ledger_pending WHERE status = 'posted' LIMIT 1)",
            "pending-transfer-resolved-once",
        ),
        (
            "INSERT INTO ledger_pending (transfer_id, debit_account, credit_account, amount_minor,"
            " cause, status, reserved_at, position) SELECT gen_random_uuid(), account,"
            " 'treasury:outgoing', balance_minor + 1, 'tamper', 'pending', now(), 1099511627776"
            " FROM ledger_balances WHERE account LIKE 'user:%' LIMIT 1",
            "user-available-not-negative",
        ),
    ],
)
def test_the_auditor_check_catches_each_broken_rule(
    client: TestClient, services: Services, clock: FixedClock, tampering: str, check: str
) -> None:
    maker, first, second = admins(client, services, 3)
    race_id, _, _ = settled_race(client, services, clock, maker)
    payout = payout_of(client, first, race_id)
    for approver in (first, second):
        act(client, approver, payout, "approve", digest=payout["table_digest"])
    act(client, second, payout, "post")
    catch_up(services)
    admins_configured = services.settings.admin_addresses
    assert reconcile_and_record(services.projections.datastore, admins_configured).breaches == []

    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute(tampering)

    breaches = reconcile_and_record(services.projections.datastore, admins_configured).breaches
    assert check in [b["check"] for b in breaches]
