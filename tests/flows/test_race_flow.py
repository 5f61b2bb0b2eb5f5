"""A whole race, through HTTP (the races issue's acceptance test): three arena members race;
five spectators deposit USDC on the loopback chain and have it verified by the
deposit-confirmation job, buy tickets while sales are open, and watch the race run on
marks the test records while the engine's service token trades the race accounts. The
calendar job closes sales, starts, finishes, makes the result official and settles it.
Every balance, pool, price and ledger account then agrees to the micro-USDC with the
figures worked out by hand below, and reconciliation finds nothing wrong."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from projections.reconciliation import reconcile_and_record
from runtime.clock import FixedClock
from runtime.settings import Settings
from services.bootstrap import Services
from services.economy import DEPOSIT_JOB
from services.races import CALENDAR_JOB
from tests.support.auditions import ENGINE, record_mark
from tests.support.clones import make_admin
from tests.support.evm_node import EvmNodeServer
from tests.support.http import assert_problem
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.races import authorize, balance, buy, members, schedule
from tests.support.wallets import SignedIn, sign_in

HOUR = timedelta(hours=1)

# What each spectator pays the treasury on-chain, in micro-USDC (any amount may be deposited).
DEPOSITS = [50_000_000, 80_000_000, 30_000_000, 45_250_000, 100_000_000]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The flows' node-pointed settings, with access tokens that outlive a race of hours on
    the test's clock (they expire after 15 minutes of it by default)."""
    return settings.model_copy(update={"access_token_ttl": 24 * 3600})


def calendar(services: Services, clock: FixedClock) -> int:
    """One round of the race calendar on the test's clock: how many steps it took."""
    catch_up(services)
    steps: int = run_job(services, CALENDAR_JOB, clock)
    catch_up(services)
    return steps


def race_of(client: TestClient, race_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/races/{race_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def account(client: TestClient, services: Services, user: SignedIn) -> dict[str, Any]:
    catch_up(services)
    response = client.get("/v1/ledger/accounts/me", headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def figures(body: dict[str, Any]) -> tuple[int, int, int]:
    """(posted, pending, available) in micro-USDC."""
    return (
        int(body["posted_minor"]),
        int(body["pending_minor"]),
        int(body["available_minor"]),
    )


def deposit(client: TestClient, user: SignedIn, tx_hash: str) -> dict[str, Any]:
    response = client.post(
        "/v1/economy/deposits",
        json={"tx_hash": tx_hash},
        headers={**user.headers, "Idempotency-Key": f"deposit-{tx_hash[-4:]}"},
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def trade(client: TestClient, account_id: str, side: str, size: str) -> dict[str, Any]:
    """The AI engine (service token) trades a race account at the latest mark."""
    response = client.post(
        f"/v1/prop/accounts/{account_id}/actions",
        json={"client_action_id": f"race-{side}", "asset": "BTC", "side": side, "size": size},
        headers=ENGINE,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_whole_race_from_deposits_to_settlement(
    client: TestClient, services: Services, node: EvmNodeServer, clock: FixedClock
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
    escrow = f"race:{race_id}:escrow"
    assert calendar(services, clock) == 1  # sales open
    assert race_of(client, race_id)["status"] == "open"

    # Five spectators pay the treasury on the loopback chain. The transfers are in the head
    # block (one confirmation of the three the settings ask for), so each deposit waits.
    spectators = [sign_in(client) for _ in DEPOSITS]
    s1, s2, s3, s4, s5 = spectators
    txs = ["0x" + f"{n:02x}" * 32 for n in range(0xD1, 0xD6)]
    for user, tx_hash, amount in zip(spectators, txs, DEPOSITS, strict=True):
        node.chain.pay(
            tx_hash, sender=user.wallet.address, value_minor=amount, block=node.chain.head
        )
        submitted = deposit(client, user, tx_hash)
        assert (submitted["status"], submitted["amount_minor"]) == ("pending_confirmations", None)
        assert deposit(client, user, tx_hash) == submitted  # the same key: the same answer
    for user, amount in zip(spectators, DEPOSITS, strict=True):
        assert figures(account(client, services, user)) == (0, amount, 0)
    # Pending money is not spendable.
    assert_problem(buy(client, s1, race_id, a, "10", "early"), 409, "insufficient-funds")

    # Two more blocks: three confirmations. The job verifies all five against the node and
    # credits each balance once.
    node.chain.head += 2
    catch_up(services)
    assert run_job(services, DEPOSIT_JOB, clock) == 5
    for user, amount in zip(spectators, DEPOSITS, strict=True):
        body = account(client, services, user)
        assert figures(body) == (amount, 0, amount)
        assert [(e["amount_minor"], e["counterparty"]) for e in body["entries"]] == [
            (str(amount), "treasury")
        ]
    assert run_job(services, DEPOSIT_JOB, clock) == 0  # nothing left to verify

    # Tickets (stakes in USDC):   A        B        C
    #   s1 (deposited  50.00)    10.00    15.00
    #   s2 (deposited  80.00)             40.00
    #   s3 (deposited  30.00)                      30.00
    #   s4 (deposited  45.25)    20.50
    #   s5 (deposited 100.00)             12.34     7.00
    #   pools                    30.50    67.34    37.00   = 134.84 USDC
    for user, clone, amount, key in (
        (s1, a, "10", "s1-a"),
        (s1, b, "15", "s1-b"),
        (s2, b, "40", "s2-b"),
        (s3, c, "30", "s3-c"),
        (s4, a, "20.50", "s4-a"),
        (s5, b, "12.34", "s5-b"),
        (s5, c, "7", "s5-c"),
    ):
        bought = buy(client, user, race_id, clone, amount, key)
        assert bought.status_code == 201, bought.text
    again = buy(client, s2, race_id, b, "40", "s2-b")  # a retry: the same ticket, paid once
    assert again.status_code == 201
    assert_problem(buy(client, s3, race_id, a, "1", "s3-more"), 409, "insufficient-funds")
    catch_up(services)

    live = race_of(client, race_id)
    pools = {e["clone_id"]: int(e["pool_minor"]) for e in live["entrants"]}
    assert pools == {a: 30_500_000, b: 67_340_000, c: 37_000_000}
    assert [e["tickets"] for e in live["entrants"]] == [2, 3, 2]
    assert live["pool_minor"] == "134840000"
    # Implied prices, each as if that entrant won alone now (takeout 15%, 1-cent breaks):
    #   G = 134,840,000; takeout = G x 1,500 // 10,000 = 20,226,000; N = 114,614,000
    #   A: profit 114,614,000 - 30,500,000 = 84,114,000;
    #      84,114,000 x 10^6 // (30,500,000 x 10,000) = 275 -> 1,000,000 + 275 x 10,000
    #   B: profit 47,274,000; 47,274,000 x 10^6 // (67,340,000 x 10,000) = 70 -> 1,700,000
    #   C: profit 77,614,000; 77,614,000 x 10^6 // (37,000,000 x 10,000) = 209 -> 3,090,000
    implied = {e["clone_id"]: e["implied_price_minor"] for e in live["entrants"]}
    assert implied == {a: "3750000", b: "1700000", c: "3090000"}
    stakes = [
        (s1, 25_000_000),
        (s2, 40_000_000),
        (s3, 30_000_000),
        (s4, 20_500_000),
        (s5, 19_340_000),
    ]
    for (user, staked), amount in zip(stakes, DEPOSITS, strict=True):
        assert figures(account(client, services, user)) == (amount - staked, 0, amount - staked)
    assert balance(client, admin, escrow) == 134_840_000

    # At the start the calendar closes sales and starts the race (an account per entrant);
    # a ticket after the close is refused.
    clock.now = start + HOUR
    assert calendar(services, clock) == 2
    assert_problem(buy(client, s5, race_id, a, "5", "late"), 409, "race-not-open")
    running = race_of(client, race_id)
    accounts = {e["clone_id"]: e["prop_account_id"] for e in running["entrants"]}
    assert running["status"] == "running" and all(accounts.values())
    assert all(e["implied_price_minor"] is None for e in running["entrants"])

    # Controlled marks: BTC at 100 at the start, 110 just before the end. The engine puts
    # B long 100 BTC, A long 50, C short 50; a mark after the end does not count, and
    # nothing fills once trading has ended.
    record_mark(services, clock(), "100")
    assert trade(client, accounts[b], "buy", "100")["status"] == "filled"
    assert trade(client, accounts[a], "buy", "50")["status"] == "filled"
    assert trade(client, accounts[c], "sell", "50")["status"] == "filled"
    ends_at = start + 2 * HOUR
    record_mark(services, ends_at - timedelta(seconds=10), "110")
    clock.now = ends_at + timedelta(minutes=1)
    record_mark(services, clock(), "60")
    late = trade(client, accounts[c], "buy", "50")
    assert (late["status"], late["reason"]) == ("rejected", "trading-ended")

    # The finish ranks B (about +1,000) over A (about +500) over C (about -500).
    assert calendar(services, clock) == 1
    finished = race_of(client, race_id)
    assert finished["status"] == "finished"
    places = {e["clone_id"]: (e["place"], e["breach"]) for e in finished["entrants"]}
    assert places == {b: (1, None), a: (2, None), c: (3, None)}
    equity = {e["clone_id"]: int(e["final_equity_minor"]) for e in finished["entrants"]}
    assert equity[b] > equity[a] > 10_000_000_000 > equity[c]

    # Not official inside the objection window (10 minutes); then official, then settled.
    clock.advance(minutes=5)
    assert calendar(services, clock) == 0
    clock.advance(minutes=5)
    assert calendar(services, clock) == 2
    settled = race_of(client, race_id)
    assert settled["status"] == "settled"

    # Settlement: B won alone.
    #   G = 134,840,000 (nothing refunded); takeout = 20,226,000; N = 114,614,000
    #   profit = N - W_B = 114,614,000 - 67,340,000 = 47,274,000
    #   P_B = 1,000,000 + (47,274,000 x 10^6 // (67,340,000 x 10,000)) x 10,000 = 1,700,000
    #   payouts: s1 15.00 x 1.70 = 25,500,000; s2 40.00 x 1.70 = 68,000,000;
    #            s5 12.34 x 1.70 = 20,978,000;  paid = 114,478,000
    #   subsidy = max(0, paid - N) = 0; breakage = N - paid = 136,000
    #   check: takeout + paid + breakage = 20,226,000 + 114,478,000 + 136,000 = G
    settlement = settled["settlement"]
    assert {k: v for k, v in settlement.items() if k.endswith("_minor")} == {
        "gross_minor": "134840000",
        "takeout_minor": "20226000",
        "net_minor": "114614000",
        "subsidy_minor": "0",
        "breakage_minor": "136000",
        "paid_minor": "114478000",
        "refunded_minor": "0",
    }
    assert settlement["prices"] == [
        {"clone_id": b, "pool_minor": "67340000", "price_minor": "1700000"}
    ]
    assert len(settlement["payout_table_sha256"]) == 64

    # The payouts wait for an admin's authorization (the calendar job made them): until
    # then a winner's payout is on its way in, not spendable.
    assert figures(account(client, services, spectators[0])) == (25_000_000, 25_500_000, 25_000_000)
    payout = authorize(client, services, race_id, [admin])
    assert (payout["maker"], payout["table_digest"]) == (
        "worker:race_calendar",
        settlement["payout_table_sha256"],
    )
    assert race_of(client, race_id)["status"] == "paid"

    # Balances: deposit - stakes + payouts.
    #   s1:  50.00 - 25.00 + 25.500 =  50.500
    #   s2:  80.00 - 40.00 + 68.000 = 108.000
    #   s3:  30.00 - 30.00          =   0
    #   s4:  45.25 - 20.50          =  24.750
    #   s5: 100.00 - 19.34 + 20.978 = 101.638
    expected = [50_500_000, 108_000_000, 0, 24_750_000, 101_638_000]
    for user, minor in zip(spectators, expected, strict=True):
        assert figures(account(client, services, user)) == (minor, 0, minor)
        assert balance(client, admin, f"user:{user.user_id}") == minor
    # Each statement: the deposit from the treasury, the stakes into the escrow, and a
    # winner's payout out of it.
    payouts = [25_500_000, 68_000_000, 0, 0, 20_978_000]
    for user, (_, staked), paid, amount in zip(spectators, stakes, payouts, DEPOSITS, strict=True):
        entries = account(client, services, user)["entries"]
        by = {"treasury": 0, escrow: 0}
        for entry in entries:
            by[entry["counterparty"]] += int(entry["amount_minor"])
        assert by == {"treasury": amount, escrow: paid - staked}

    # The ledger: the escrow is empty, the house holds takeout and breakage, the minus pool
    # paid nothing, and the treasury is short exactly what came in on-chain:
    #   users 284,888,000 + takeout 20,226,000 + breakage 136,000 = 305,250,000 = deposits.
    assert balance(client, admin, escrow) == 0
    assert balance(client, admin, "treasury:takeout") == 20_226_000
    assert balance(client, admin, "treasury:breakage") == 136_000
    assert balance(client, admin, "treasury:minus_pool") == 0
    assert sum(expected) + 20_226_000 + 136_000 == sum(DEPOSITS) == 305_250_000
    assert balance(client, admin, "treasury") == -305_250_000

    # What each ticket came to, as its owner sees it.
    outcomes = [
        [(t["clone_id"], t["outcome"], t["returned_minor"]) for t in tickets]
        for user in spectators
        for tickets in [client.get("/v1/tickets", headers=user.headers).json()["items"]]
    ]
    assert outcomes == [
        [(a, "lost", "0"), (b, "won", "25500000")],
        [(b, "won", "68000000")],
        [(c, "lost", "0")],
        [(a, "lost", "0")],
        [(b, "won", "20978000"), (c, "lost", "0")],
    ]

    # The reconciliation monitors agree: the ledger balances, the escrow is empty, the
    # settlement conserves every ticket's stake, the pools equal the counted tickets.
    catch_up(services)
    assert (
        reconcile_and_record(
            services.projections.datastore, services.settings.admin_addresses
        ).breaches
        == []
    )
