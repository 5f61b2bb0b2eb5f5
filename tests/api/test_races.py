"""Races through HTTP: the lifecycle on the calendar job and by admins, tickets and their
accounting, settlement to the micro-USDC, voids, concurrency at the close, and bad input."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

from projections.rebuild import rebuild
from projections.reconciliation import reconcile_and_record
from runtime.clock import FixedClock
from runtime.settings import Settings
from services.bootstrap import Services
from tests.support.auditions import ENGINE, record_mark
from tests.support.clones import make_admin
from tests.support.flow import every_table
from tests.support.http import assert_problem
from tests.support.jobs import run_job
from tests.support.owner import assert_owner_only
from tests.support.projections import catch_up
from tests.support.races import USDC, authorize, balance, buy, fund, members, schedule
from tests.support.wallets import SignedIn, sign_in

HOUR = timedelta(hours=1)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Races run for hours on the test's clock: access tokens that outlive them."""
    return settings.model_copy(update={"access_token_ttl": 24 * 3600})


def race_of(client: TestClient, race_id: str) -> Any:
    response = client.get(f"/v1/races/{race_id}")
    assert response.status_code == 200, response.text
    return response.json()


def calendar(services: Services, clock: FixedClock) -> int:
    catch_up(services)
    steps: int = run_job(services, "race_calendar", clock)
    catch_up(services)
    return steps


def trade(client: TestClient, account_id: str, side: str, number: int = 1) -> Any:
    response = client.post(
        f"/v1/prop/accounts/{account_id}/actions",
        json={"client_action_id": f"r-{number}", "asset": "BTC", "side": side, "size": "100"},
        headers=ENGINE,
    )
    assert response.status_code == 200, response.text
    return response.json()


def spectators(
    client: TestClient, services: Services, clock: FixedClock, count: int, usdc: int = 100
) -> list[SignedIn]:
    users = [sign_in(client) for _ in range(count)]
    for user in users:
        fund(services, user, usdc * USDC, clock())
    return users


def test_a_whole_race_settles_to_the_micro_usdc(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    a, b, c = members(services, client, 3, clock())
    start = clock()
    race_id = schedule(
        client,
        admin,
        start,
        entrants=3,
        duration_seconds=3600,
        starts_at=(start + HOUR).isoformat(),
    )["race_id"]

    # The calendar opens sales; five funded spectators buy tickets.
    assert calendar(services, clock) == 1
    s1, s2, s3, s4, s5 = spectators(client, services, clock, 5)
    for user, clone, amount in (
        (s1, a, "10"),
        (s2, a, "20"),
        (s3, b, "30"),
        (s4, c, "40"),
        (s5, b, "25"),
    ):
        assert buy(client, user, race_id, clone, amount, "t1").status_code == 201
    again = buy(client, s1, race_id, a, "10", "t1")  # the same key: the same ticket
    assert again.status_code == 201
    catch_up(services)
    live = race_of(client, race_id)
    assert live["status"] == "open"
    pools = {e["clone_id"]: int(e["pool_minor"]) for e in live["entrants"]}
    assert pools == {a: 30 * USDC, b: 55 * USDC, c: 40 * USDC}
    assert live["pool_minor"] == str(125 * USDC)
    implied = {e["clone_id"]: e["implied_price_minor"] for e in live["entrants"]}
    assert implied[a] == "3540000"  # the price A would pay if it won now

    # At the start the calendar closes sales and starts the race; a late ticket is refused.
    clock.now = start + HOUR
    assert calendar(services, clock) == 2
    assert_problem(buy(client, s1, race_id, a, "5", "late"), 409, "race-not-open")
    running = race_of(client, race_id)
    accounts = {e["clone_id"]: e["prop_account_id"] for e in running["entrants"]}
    assert running["status"] == "running" and all(accounts.values())

    # A goes long, C short; the price rises 10% by the end. After the end nothing fills,
    # and a later mark does not count.
    record_mark(services, clock(), "100")
    assert trade(client, accounts[a], "buy")["status"] == "filled"
    assert trade(client, accounts[c], "sell")["status"] == "filled"
    ends_at = start + 2 * HOUR
    record_mark(services, ends_at - timedelta(seconds=10), "110")
    clock.now = ends_at + timedelta(minutes=1)
    record_mark(services, clock(), "50")
    late = trade(client, accounts[b], "buy", number=2)
    assert (late["status"], late["reason"]) == ("rejected", "trading-ended")

    # The finish ranks A first; the result becomes official after the objection window,
    # and the calendar settles it.
    assert calendar(services, clock) == 1
    finished = race_of(client, race_id)
    places = {e["clone_id"]: (e["place"], e["breach"]) for e in finished["entrants"]}
    assert places == {a: (1, None), b: (2, None), c: (3, None)}
    assert int(finished["entrants"][1]["final_equity_minor"]) == 10_000 * USDC
    clock.advance(minutes=10)
    assert calendar(services, clock) == 2
    settled = race_of(client, race_id)
    assert settled["status"] == "settled"  # the payout awaits authorization
    settlement = settled["settlement"]
    assert (settlement["gross_minor"], settlement["takeout_minor"], settlement["net_minor"]) == (
        str(125 * USDC),
        "18750000",
        "106250000",
    )
    assert (
        settlement["paid_minor"],
        settlement["breakage_minor"],
        settlement["subsidy_minor"],
    ) == (
        "106200000",
        "50000",
        "0",
    )
    assert settlement["prices"] == [
        {"clone_id": a, "pool_minor": str(30 * USDC), "price_minor": "3540000"}
    ]

    # Until an admin authorizes the payout, the winners' money is on its way, not theirs.
    assert balance(client, admin, f"user:{s1.user_id}") == 90 * USDC
    assert (
        reconcile_and_record(
            services.projections.datastore, services.settings.admin_addresses
        ).breaches
        == []
    )
    payout = authorize(client, services, race_id, [admin])
    assert (payout["maker"], payout["total_minor"], payout["required_approvals"]) == (
        "worker:race_calendar",
        "106200000",
        1,
    )
    assert {(line["user_id"], line["amount_minor"]) for line in payout["table"]} == {
        (s1.user_id, "35400000"),
        (s2.user_id, "70800000"),
    }
    assert race_of(client, race_id)["status"] == "paid"

    # Every balance agrees: winners paid at the price, the rest kept, escrow empty.
    expected = [
        (s1, 125_400_000),
        (s2, 150_800_000),
        (s3, 70 * USDC),
        (s4, 60 * USDC),
        (s5, 75 * USDC),
    ]
    for user, minor in expected:
        assert balance(client, admin, f"user:{user.user_id}") == minor
    assert balance(client, admin, f"race:{race_id}:escrow") == 0
    assert balance(client, admin, "treasury:takeout") == 18_750_000
    assert balance(client, admin, "treasury:breakage") == 50_000
    tickets = client.get("/v1/tickets", headers=s2.headers).json()["items"]
    assert [(t["outcome"], t["returned_minor"]) for t in tickets] == [("won", "70800000")]
    lost = client.get("/v1/tickets", headers=s4.headers).json()["items"]
    assert [(t["outcome"], t["returned_minor"]) for t in lost] == [("lost", "0")]

    # The reconciliation monitors agree: escrow empty, the settlement conserved.
    assert (
        reconcile_and_record(
            services.projections.datastore, services.settings.admin_addresses
        ).breaches
        == []
    )

    # Settling again is a conflict.
    twice = client.post(
        f"/v1/admin/races/{race_id}/settle", json={"reason": "again"}, headers=admin.headers
    )
    assert_problem(twice, 409, "race-already-settled")


VOIDABLE = ["scheduled", "open", "closed", "running", "finished", "official"]


@pytest.mark.parametrize("state", VOIDABLE)
def test_void_in_every_state_refunds_every_ticket(
    client: TestClient, services: Services, clock: FixedClock, state: str
) -> None:
    admin = make_admin(client, services)
    a, b = members(services, client, 2, clock())
    start = clock() + timedelta(minutes=5)
    race_id = schedule(client, admin, start)["race_id"]
    path = f"/v1/admin/races/{race_id}"
    users = spectators(client, services, clock, 2, usdc=50)

    def step(action: str) -> None:
        response = client.post(f"{path}/{action}", json={"reason": "test"}, headers=admin.headers)
        assert response.status_code == 200, response.text

    steps = ["open", "close", "start", "finish", "official"][: VOIDABLE.index(state)]
    for action in steps:
        if action == "close":
            buy(client, users[0], race_id, a, "20", "k1")
            buy(client, users[1], race_id, b, "7.5", "k2")
        if action == "finish":
            clock.now = start + 3 * HOUR
        if action == "official":
            clock.advance(hours=1)
        step(action)
    catch_up(services)

    step("void")
    catch_up(services)
    assert race_of(client, race_id)["status"] == "void"
    for user in users:
        assert balance(client, admin, f"user:{user.user_id}") == 50 * USDC
    assert balance(client, admin, f"race:{race_id}:escrow") == 0
    assert balance(client, admin, "treasury:takeout") == 0
    again = client.post(f"{path}/void", json={"reason": "again"}, headers=admin.headers)
    assert_problem(again, 409, "race-state")


def test_tickets_racing_the_close_are_counted_or_refunded_never_lost(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    a, b = members(services, client, 2, clock())
    race_id = schedule(client, admin, clock())["race_id"]
    calendar(services, clock)
    buyers = spectators(client, services, clock, 8, usdc=10)
    barrier = threading.Barrier(len(buyers) + 1)
    answers: list[Any] = []

    def purchase(user: SignedIn) -> None:
        barrier.wait()
        for n in range(3):
            answers.append(buy(client, user, race_id, a if n % 2 else b, "1", f"k{n}"))

    def close() -> None:
        barrier.wait()
        client.post(
            f"/v1/admin/races/{race_id}/close", json={"reason": "now"}, headers=admin.headers
        )

    threads = [threading.Thread(target=purchase, args=(u,)) for u in buyers]
    threads.append(threading.Thread(target=close))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    catch_up(services)
    sold = [r for r in answers if r.status_code == 201]
    assert all(r.status_code in (201, 409) for r in answers)
    counted = sum(e["tickets"] for e in race_of(client, race_id)["entrants"])

    void = client.post(
        f"/v1/admin/races/{race_id}/void", json={"reason": "x"}, headers=admin.headers
    )
    assert void.status_code == 200, void.text
    catch_up(services)
    assert counted <= len(sold)
    assert sum(balance(client, admin, f"user:{u.user_id}") for u in buyers) == 80 * USDC
    assert balance(client, admin, f"race:{race_id}:escrow") == 0


def test_fifty_concurrent_buyers_never_overdraw(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    a, _ = members(services, client, 2, clock())
    race_id = schedule(client, admin, clock())["race_id"]
    calendar(services, clock)
    users = spectators(client, services, clock, 5, usdc=3)
    barrier = threading.Barrier(50)
    answers: list[tuple[str, int]] = []

    def purchase(user: SignedIn, n: int) -> None:
        barrier.wait()
        answers.append((user.user_id, buy(client, user, race_id, a, "1", f"b{n}").status_code))

    threads = [threading.Thread(target=purchase, args=(users[n % 5], n)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for user in users:
        codes = sorted(code for who, code in answers if who == user.user_id)
        assert codes == [201] * 3 + [409] * 7
    catch_up(services)
    for user in users:
        assert balance(client, admin, f"user:{user.user_id}") == 0
    assert balance(client, admin, f"race:{race_id}:escrow") == 15 * USDC


def test_ticket_routes_are_owner_safe_and_lifecycle_routes_admin_only(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    a, _ = members(services, client, 2, clock())
    race_id = schedule(client, admin, clock())["race_id"]
    calendar(services, clock)
    owner, stranger = spectators(client, services, clock, 2, usdc=5)
    ticket = buy(client, owner, race_id, a, "2", "mine").json()["ticket_id"]
    catch_up(services)

    mine = assert_owner_only(
        client, "GET", f"/v1/tickets/{ticket}", owner=owner.headers, stranger=stranger.headers
    )
    assert (mine.json()["outcome"], mine.json()["counted"]) == ("pending", True)
    assert client.get("/v1/tickets", headers=stranger.headers).json()["items"] == []
    for action in ("open", "close", "start", "finish", "official", "settle", "void"):
        refused = client.post(
            f"/v1/admin/races/{race_id}/{action}", json={"reason": "x"}, headers=owner.headers
        )
        assert_problem(refused, 403, "forbidden")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"amount": "1.001"}, 422, "invalid-request"),
        ({"amount": "0.5"}, 422, "invalid-stake"),
        ({"amount": "-1"}, 422, "invalid-request"),
        (
            {"amount": "1", "clone_id": "00000000-0000-0000-0000-000000000000"},
            422,
            "unknown-entrant",
        ),
        ({"amount": "500"}, 409, "insufficient-funds"),
    ],
)
def test_bad_tickets_are_problems_and_leave_nothing(
    client: TestClient,
    services: Services,
    clock: FixedClock,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    admin = make_admin(client, services)
    a, _ = members(services, client, 2, clock())
    race_id = schedule(client, admin, clock())["race_id"]
    calendar(services, clock)
    (user,) = spectators(client, services, clock, 1, usdc=5)

    response = buy(client, user, race_id, body.pop("clone_id", a), body["amount"], "bad")

    assert_problem(response, status, code)
    catch_up(services)
    assert balance(client, admin, f"user:{user.user_id}") == 5 * USDC
    assert client.get("/v1/tickets", headers=user.headers).json()["items"] == []


def test_unknown_races_and_missing_keys(client: TestClient, services: Services) -> None:
    user = sign_in(client)
    unknown = "00000000-0000-0000-0000-000000000000"
    assert_problem(client.get(f"/v1/races/{unknown}"), 404, "not-found")
    assert_problem(
        client.post(
            f"/v1/races/{unknown}/tickets",
            json={"clone_id": unknown, "amount": "1"},
            headers={**user.headers, "Idempotency-Key": "k"},
        ),
        404,
        "not-found",
    )
    no_key = client.post(
        f"/v1/races/{unknown}/tickets",
        json={"clone_id": unknown, "amount": "1"},
        headers=user.headers,
    )
    assert_problem(no_key, 422, "invalid-request")


def test_scheduling_needs_enough_free_members(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    members(services, client, 2, clock())
    schedule(client, admin, clock(), entrants=2)
    refused = client.post(
        "/v1/admin/races",
        json={"name": "Second", "sales_open_at": clock().isoformat(), "reason": "x"},
        headers={**admin.headers, "Idempotency-Key": "second"},
    )
    assert_problem(refused, 409, "not-enough-entrants")  # both are in the first race
    bad_times = client.post(
        "/v1/admin/races",
        json={
            "name": "Backwards",
            "sales_open_at": clock().isoformat(),
            "starts_at": (clock() - HOUR).isoformat(),
            "reason": "x",
        },
        headers={**admin.headers, "Idempotency-Key": "backwards"},
    )
    assert_problem(bad_times, 422, "invalid-race-rules")


def test_an_amended_result_disqualifies_before_it_is_official(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    a, b = members(services, client, 2, clock())
    start = clock()
    race_id = schedule(client, admin, start)["race_id"]
    calendar(services, clock)
    (fan,) = spectators(client, services, clock, 1, usdc=10)
    buy(client, fan, race_id, a, "4", "on-a")
    buy(client, fan, race_id, b, "6", "on-b")
    clock.now = start + 3 * HOUR
    calendar(services, clock)  # closed, started, finished: a dead heat at the start equity
    finished = race_of(client, race_id)
    assert [e["place"] for e in finished["entrants"]] == [1, 1]

    path = f"/v1/admin/races/{race_id}"
    amended = client.post(
        f"{path}/amend", json={"disqualified": [a], "reason": "late data"}, headers=admin.headers
    )
    assert amended.status_code == 200, amended.text
    early = client.post(f"{path}/official", json={"reason": "x"}, headers=admin.headers)
    assert_problem(early, 409, "objection-window-open")
    clock.advance(minutes=11)
    calendar(services, clock)
    settled = race_of(client, race_id)
    assert [(e["clone_id"], e["place"], e["breach"]) for e in settled["entrants"]] == [
        (a, 2, "disqualified"),
        (b, 1, None),
    ]
    late = client.post(
        f"{path}/amend", json={"disqualified": [b], "reason": "too late"}, headers=admin.headers
    )
    assert_problem(late, 409, "race-state")
    # B alone won with 6 of a 10 pool: (8.5 net - 6) / 6 -> 1.41 per 1 USDC, paid 8.46.
    authorize(client, services, race_id, [admin])
    assert balance(client, admin, f"user:{fan.user_id}") == 10 * USDC - 10 * USDC + 8_460_000


def test_rebuilding_the_races_read_model_yields_identical_rows(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    a, _ = members(services, client, 2, clock())
    start = clock()
    race_id = schedule(client, admin, start)["race_id"]
    calendar(services, clock)
    (fan,) = spectators(client, services, clock, 1, usdc=10)
    buy(client, fan, race_id, a, "4", "on-a")
    clock.now = start + 3 * HOUR
    calendar(services, clock)
    before = every_table(services)

    rebuild(services.projections, "races")

    assert every_table(services) == before
    assert before["race_tickets"][0] == 1
    assert UUID(race_id)


@pytest.mark.parametrize(
    ("tampering", "check"),
    [
        (
            "UPDATE ledger_balances SET balance_minor = 7 WHERE account LIKE 'race:%:escrow'",
            "race-escrow-empty-when-done",
        ),
        (
            "UPDATE races SET summary = jsonb_set(summary, '{paid_minor}', '\"1\"')",
            "race-settlement-conserved",
        ),
        ("DELETE FROM race_tickets WHERE counted", "race-settlement-conserved"),
        (
            "UPDATE race_entrants SET pool_minor = pool_minor + 1",
            "race-pool-equals-counted-tickets",
        ),
    ],
)
def test_reconciliation_catches_a_race_that_does_not_add_up(
    client: TestClient, services: Services, clock: FixedClock, tampering: str, check: str
) -> None:
    admin = make_admin(client, services)
    a, _ = members(services, client, 2, clock())
    start = clock()
    race_id = schedule(client, admin, start)["race_id"]
    calendar(services, clock)
    (fan,) = spectators(client, services, clock, 1, usdc=10)
    buy(client, fan, race_id, a, "4", "on-a")
    clock.now = start + 3 * HOUR
    calendar(services, clock)
    clock.advance(minutes=11)
    calendar(services, clock)
    assert race_of(client, race_id)["status"] == "settled"
    assert (
        reconcile_and_record(
            services.projections.datastore, services.settings.admin_addresses
        ).breaches
        == []
    )

    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute(tampering)

    breaches = reconcile_and_record(
        services.projections.datastore, services.settings.admin_addresses
    ).breaches
    assert check in [b["check"] for b in breaches]
