"""Issue 15, H2: a pending purchase holds nothing, one user cannot keep many pending, and
the deposit poller shares its rounds across users. Each attack goes through the public
surface (HTTP, and the `deposit_confirmations` job as the worker builds it)."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

import projections.purchases
from aggregates.base import derive_id
from runtime.clock import FixedClock
from services.bootstrap import Services
from services.economy import DEPOSIT_JOB
from tests.economy.test_purchases import FEE, purchase, quote, tx
from tests.support.evm_node import EvmNodeServer
from tests.support.http import assert_problem
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in

CAP = 5  # PUMPPARTY_MAX_PENDING_PURCHASES's default


def rows(services: Services, query: str, *params: Any) -> list[tuple[Any, ...]]:
    catch_up(services)
    with psycopg.connect(services.url) as conn:
        return conn.execute(query, params).fetchall()


def events_of(services: Services, aggregate_id: UUID) -> int:
    with psycopg.connect(services.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pumpparty_events WHERE originator_id = %s", (aggregate_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def unconfirmed(node: EvmNodeServer, tx_hash: str, payer: SignedIn) -> None:
    """A transfer mined in the head block: one confirmation, not final yet."""
    node.chain.pay(tx_hash, sender=payer.wallet.address, value_minor=FEE, block=node.chain.head)


def status_of(client: TestClient, owner: SignedIn, purchase_id: str) -> tuple[str, str | None]:
    body = client.get(f"/v1/economy/audition-purchases/{purchase_id}", headers=owner.headers)
    assert body.status_code == 200, body.text
    return body.json()["status"], body.json()["reason"]


def test_an_attacker_who_submits_a_victims_tx_first_cannot_hold_it(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    victim, attacker = sign_in(client), sign_in(client)
    victim_quote, attacker_quote = quote(client, victim), quote(client, attacker)
    unconfirmed(node, tx(1), victim)

    grabbed = purchase(client, attacker, attacker_quote["quote_id"], tx(1))
    own = purchase(client, victim, victim_quote["quote_id"], tx(1))

    assert grabbed.status_code == 202 and grabbed.json()["status"] == "pending_confirmations"
    assert own.status_code == 202, own.text  # before the fix: 409 tx-already-claimed
    assert own.json()["status"] == "pending_confirmations"

    node.chain.head += 5
    catch_up(services)
    run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)

    assert status_of(client, attacker, grabbed.json()["purchase_id"]) == (
        "rejected",
        "wrong-sender",
    )
    assert status_of(client, victim, own.json()["purchase_id"]) == ("verified", None)
    # Exactly one purchase credited: the victim's, once.
    assert rows(services, "SELECT user_id FROM entitlements") == [(UUID(victim.user_id),)]
    entries = rows(services, "SELECT account, amount_minor FROM ledger_entries")
    assert sorted(entries) == sorted(
        [
            (f"user:{victim.user_id}", -FEE),
            (f"user:{victim.user_id}", FEE),
            ("audition_revenue", FEE),
            ("treasury", -FEE),
        ]
    )


def test_a_tx_is_claimed_only_by_the_first_purchase_it_verifies(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    payer = sign_in(client)
    first_quote, second_quote = quote(client, payer), quote(client, payer)
    unconfirmed(node, tx(2), payer)
    first = purchase(client, payer, first_quote["quote_id"], tx(2), key="first")
    second = purchase(client, payer, second_quote["quote_id"], tx(2), key="second")
    assert [first.status_code, second.status_code] == [202, 202]

    node.chain.head += 5
    catch_up(services)
    run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)
    again = purchase(client, payer, quote(client, payer)["quote_id"], tx(2), key="third")

    statuses = sorted(status_of(client, payer, r.json()["purchase_id"]) for r in (first, second))
    assert statuses == [("rejected", "tx-already-claimed"), ("verified", None)]
    assert_problem(again, 409, "tx-already-claimed")
    assert rows(services, "SELECT count(*) FROM entitlements") == [(1,)]
    assert rows(services, "SELECT count(*) FROM ledger_entries") == [(4,)]


def test_pending_purchases_per_user_are_capped(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    buyer = sign_in(client)
    for n in range(CAP):
        unconfirmed(node, tx(10 + n), buyer)
        accepted = purchase(client, buyer, quote(client, buyer)["quote_id"], tx(10 + n), f"k{n}")
        assert accepted.json()["status"] == "pending_confirmations", accepted.text
    unconfirmed(node, tx(20), buyer)

    refused = purchase(client, buyer, quote(client, buyer)["quote_id"], tx(20), "one-more")

    assert_problem(refused, 409, "too-many-pending-purchases")
    # Nothing half-written: no purchase under that key, nothing in the read model.
    assert events_of(services, derive_id("Purchase", f"{buyer.user_id}:one-more")) == 0
    assert rows(services, "SELECT count(*) FROM purchases") == [(CAP,)]

    # Once one settles, there is room again.
    node.chain.head += 5
    catch_up(services)
    assert run_job(services, DEPOSIT_JOB, clock) == CAP
    later = purchase(client, buyer, quote(client, buyer)["quote_id"], tx(20), "one-more")
    assert later.status_code == 202 and later.json()["status"] == "verified", later.text


def test_the_cap_holds_under_concurrent_submissions(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    buyer = sign_in(client)
    quotes = [quote(client, buyer)["quote_id"] for _ in range(12)]
    for n in range(12):
        unconfirmed(node, tx(30 + n), buyer)
    barrier = threading.Barrier(12)
    answers: list[tuple[int, str]] = []

    def submit(n: int) -> None:
        barrier.wait()
        response = purchase(client, buyer, quotes[n], tx(30 + n), key=f"race-{n}")
        answers.append((response.status_code, response.json().get("type", "")))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    accepted = [a for a in answers if a[0] == 202]
    assert 1 <= len(accepted) <= CAP
    assert all(code == 409 for code, _ in answers if code != 202), answers
    assert rows(services, "SELECT count(*) FROM purchases") == [(len(accepted),)]


def test_one_users_many_pendings_do_not_starve_another_in_a_round(
    client: TestClient,
    node: EvmNodeServer,
    services: Services,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    busy, quiet = sign_in(client), sign_in(client)
    busy_purchases = []
    for n in range(CAP):
        unconfirmed(node, tx(50 + n), busy)
        busy_purchases.append(
            purchase(client, busy, quote(client, busy)["quote_id"], tx(50 + n), f"b{n}").json()
        )
        clock.advance(seconds=1)
    unconfirmed(node, tx(60), quiet)
    late = purchase(client, quiet, quote(client, quiet)["quote_id"], tx(60)).json()
    node.chain.head += 5
    catch_up(services)
    monkeypatch.setattr(projections.purchases, "POLL_ROUND", 3, raising=False)

    settled = run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)

    assert settled == 3
    assert status_of(client, quiet, late["purchase_id"]) == ("verified", None)
    assert [status_of(client, busy, p["purchase_id"])[0] for p in busy_purchases] == [
        "verified",
        "verified",
        "pending_confirmations",
        "pending_confirmations",
        "pending_confirmations",
    ]
