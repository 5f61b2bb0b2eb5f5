"""Issue 20, item 4: the reconciliation monitors are one registry of invariants, run at one
common log position. For every registered check: a small valid world passes every check;
then that check's breach is injected straight into the read-model tables (as a corruption
would) and that check, and no other, reports it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from fastapi.testclient import TestClient

from aggregates.ledger import TREASURY
from projections.reconciliation import (
    CHECKS,
    MAX_BREACHES_SHOWN,
    Reconciliation,
    reconcile,
    reconcile_and_record,
)
from projections.runner import ProjectionRunner
from runtime.clock import FixedClock
from runtime.settings import Settings
from services.bootstrap import Services
from tests.api.test_payouts import act as payout_act
from tests.api.test_payouts import settled_race
from tests.api.test_prop import act as prop_act
from tests.api.test_prop import open_account, record_mark, sign_in_admin
from tests.conftest import AUDITOR_TOKEN
from tests.economy.test_purchases import paid, tx
from tests.economy.test_withdrawals import funded, lease, pay_out, report, requested
from tests.support.evm_node import EvmNodeServer
from tests.support.http import bearer
from tests.support.monitor import monitor_headers
from tests.support.projections import catch_up
from tests.support.races import USDC, admins, payout_of
from tests.support.wallets import sign_in

AUDITOR = bearer(AUDITOR_TOKEN)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """What the worlds below need: races that run for hours on the test clock (long-lived
    tokens), two approvers from 5 USDC of payouts, withdrawals approved up to 50 USDC."""
    return settings.model_copy(
        update={
            "access_token_ttl": 72 * 3600,
            "payout_dual_approval_minor": 5 * USDC,
            "withdrawal_auto_approve_minor": 50 * USDC,
            "withdrawal_lease_seconds": 60,
        }
    )


@dataclass
class World:
    client: TestClient
    node: EvmNodeServer
    services: Services
    clock: FixedClock
    facts: dict[str, Any] = field(default_factory=dict)

    def check(self) -> Reconciliation:
        return reconcile(
            self.services.projections.datastore,
            self.services.settings.admin_addresses,
            mapper=self.services.projections.mapper,
        )


# --- small valid worlds ----------------------------------------------------------------------


def race_world(world: World) -> None:
    """A race settled and paid: a fan staked on both entrants, two admins other than the
    maker approved the payout table and it posted."""
    maker, first, second = admins(world.client, world.services, 3)
    race_id, fan, _ = settled_race(world.client, world.services, world.clock, maker)
    payout = payout_of(world.client, first, race_id)
    for approver in (first, second):
        payout_act(world.client, approver, payout, "approve", digest=payout["table_digest"])
    posted = payout_act(world.client, second, payout, "post")
    assert posted.json()["status"] == "posted", posted.text
    catch_up(world.services)
    world.facts.update(race_id=race_id, fan=f"user:{fan.user_id}")


def purchase_world(world: World) -> None:
    """An audition purchase verified, its entitlement granted."""
    _, response = paid(world.client, world.node)
    assert response.json()["status"] == "verified", response.text
    catch_up(world.services)


def withdrawal_world(world: World) -> None:
    """A user's deposit, and a withdrawal of part of it paid on chain and posted."""
    user = funded(world.client, world.node, 40 * USDC, 16)
    asked = requested(world.client, user, "10")
    leased = lease(world.client, world.services)
    assert leased is not None
    pay_out(world.node, tx(16), user.wallet.address, 10 * USDC, confirmations=5)
    reported = report(world.client, asked["withdrawal_id"], tx(16), leased["fencing_token"])
    assert reported.json()["status"] == "posted", reported.text
    catch_up(world.services)


def prop_world(world: World) -> None:
    """A prop account that bought 2 BTC, then 1 more, sold 1 and bought 3 ETH."""
    admin = sign_in_admin(world.client, world.services)
    world.facts.update(account_id=open_account(world.client, admin, sign_in(world.client)))
    for number, body in enumerate(
        (
            {"size": "2"},
            {"size": "1"},
            {"side": "sell", "size": "1"},
            {"asset": "ETH", "size": "3"},
        ),
        start=1,
    ):
        trade(world, number, **body)
    catch_up(world.services)


def trade(world: World, number: int, **body: str) -> None:
    """One engine action a minute (the rule set's cadence), filled at a fresh mark."""
    world.clock.advance(minutes=1)
    record_mark(world.services, world.clock, "BTC", "100")
    record_mark(world.services, world.clock, "ETH", "10")
    response = prop_act(world.client, world.facts["account_id"], number, **body)
    assert response.json()["status"] == "filled", response.text


# --- corruptions -----------------------------------------------------------------------------

Connection = psycopg.Connection[Any]


def move(conn: Connection, debit: str, credit: str, amount: int) -> None:
    """A transfer the log never recorded, with both entries and both balances, so the
    trial balance and every balance still agree with the entries."""
    transfer_id = uuid4()
    for account, counterparty, signed in ((credit, debit, amount), (debit, credit, -amount)):
        entry(conn, transfer_id, account, counterparty, signed)


def entry(conn: Connection, transfer_id: Any, account: str, counterparty: str, amount: int) -> None:
    conn.execute(
        "INSERT INTO ledger_entries (transfer_id, account, counterparty, amount_minor, cause,"
        " position, posted_at) VALUES (%s, %s, %s, %s, 'tampered', 1, now())",
        (transfer_id, account, counterparty, amount),
    )
    conn.execute(
        "INSERT INTO ledger_balances AS b (account, balance_minor, entries) VALUES (%s, %s, 1)"
        " ON CONFLICT (account) DO UPDATE SET balance_minor = b.balance_minor + %s,"
        " entries = b.entries + 1",
        (account, amount, amount),
    )


def balance_of(conn: Connection, account: str) -> int:
    row = conn.execute(
        "SELECT balance_minor FROM ledger_balances WHERE account = %s", (account,)
    ).fetchone()
    assert row is not None, account
    return int(row[0])


def pending(conn: Connection, debit: str, amount: int, status: str) -> None:
    conn.execute(
        "INSERT INTO ledger_pending (transfer_id, debit_account, credit_account, amount_minor,"
        " cause, status, reserved_at, position) VALUES (%s, %s, %s, %s, 'tampered', %s, now(),"
        " 1099511627776)",
        (uuid4(), debit, TREASURY, amount, status),
    )


def latest_transfer(conn: Connection) -> Any:
    """The transfer posted last: the ledger's most recently changed aggregate."""
    row = conn.execute(
        "SELECT transfer_id FROM ledger_entries ORDER BY position DESC LIMIT 1"
    ).fetchone()
    assert row is not None
    return row[0]


Inject = Callable[[Connection, dict[str, Any]], object]


@dataclass(frozen=True)
class Injection:
    world: Callable[[World], None]
    inject: Inject
    label: str


def sql(statement: str) -> Inject:
    def inject(conn: Connection, facts: dict[str, Any]) -> None:
        conn.execute(statement.format(**facts))  # type: ignore[arg-type]

    return inject


INJECTIONS: dict[str, list[Injection]] = {
    "trial-balance": [
        Injection(
            race_world,
            lambda conn, _: entry(conn, uuid4(), TREASURY, "nobody", 3),
            "an entry without its other side",
        )
    ],
    "balance-equals-entries": [
        Injection(
            race_world,
            sql(
                "UPDATE ledger_balances SET balance_minor = balance_minor + 1"
                f" WHERE account = '{TREASURY}'"
            ),
            "a balance moved without an entry",
        )
    ],
    "user-balance-not-negative": [
        Injection(
            race_world,
            lambda conn, facts: move(
                conn, facts["fan"], TREASURY, balance_of(conn, facts["fan"]) + 1
            ),
            "a user paid out more than they hold",
        )
    ],
    "user-available-not-negative": [
        Injection(
            race_world,
            lambda conn, facts: pending(
                conn, facts["fan"], balance_of(conn, facts["fan"]) + 1, "pending"
            ),
            "a reservation beyond the user's balance",
        )
    ],
    "pending-transfer-resolved-once": [
        Injection(
            race_world,
            lambda conn, facts: pending(conn, facts["fan"], 1, "posted"),
            "a posted pending transfer without its entries",
        )
    ],
    "one-grant-per-verified-purchase": [
        Injection(purchase_world, sql("DELETE FROM entitlements"), "a grant lost")
    ],
    "race-escrow-empty-when-done": [
        Injection(
            race_world,
            lambda conn, facts: move(conn, TREASURY, f"race:{facts['race_id']}:escrow", 7),
            "money left in a paid race's escrow",
        )
    ],
    "race-escrow-not-negative": [
        Injection(
            race_world,
            lambda conn, _: move(conn, f"race:{uuid4()}:escrow", TREASURY, 5),
            "an escrow paid out more than it held",
        )
    ],
    "race-settlement-conserved": [
        Injection(
            race_world,
            sql(
                "UPDATE races SET summary = jsonb_set(summary, '{{paid_minor}}',"
                " to_jsonb(((summary->>'paid_minor')::bigint + 1)::text))"
            ),
            "a settlement paying a micro-USDC it does not have",
        )
    ],
    "race-pool-equals-counted-tickets": [
        Injection(
            race_world,
            sql(
                "UPDATE race_entrants SET pool_minor = pool_minor + 1 WHERE clone_id ="
                " (SELECT min(clone_id::text)::uuid FROM race_entrants)"
            ),
            "a pool with a stake no ticket made",
        )
    ],
    "payout-authorized-before-posting": [
        Injection(
            race_world,
            sql("UPDATE payouts SET approvals = '[]'::jsonb WHERE status = 'posted'"),
            "a posted payout without approvals",
        )
    ],
    "withdrawal-posted-with-verified-tx": [
        Injection(
            withdrawal_world,
            sql("UPDATE withdrawals SET paid_minor = paid_minor - 1"),
            "a withdrawal paid short",
        )
    ],
    "treasury-outgoing-equals-posted-withdrawals": [
        Injection(
            withdrawal_world,
            lambda conn, _: move(conn, TREASURY, "treasury:outgoing", 1),
            "money out of the treasury that no withdrawal paid",
        )
    ],
    "prop-position-equals-fills": [
        Injection(
            prop_world,
            sql("UPDATE prop_positions SET size = size + 1 WHERE asset = 'BTC'"),
            "a position larger than its fills",
        ),
        Injection(
            prop_world,
            sql("DELETE FROM prop_positions WHERE asset = 'ETH'"),
            "a position lost",
        ),
    ],
    "ledger-matches-rebuild-sample": [
        Injection(
            race_world,
            lambda conn, _: conn.execute(
                "UPDATE ledger_entries SET cause = cause || ':tampered' WHERE transfer_id = %s",
                (latest_transfer(conn),),
            ),
            "the last transfer's entries rewritten",
        ),
        Injection(
            race_world,
            lambda conn, _: conn.execute(
                "DELETE FROM ledger_pending WHERE transfer_id = %s", (latest_transfer(conn),)
            ),
            "the last pending transfer's row lost",
        ),
    ],
    "prop-accounts-match-rebuild-sample": [
        Injection(
            prop_world,
            sql("UPDATE prop_accounts SET equity = equity + 1"),
            "an account's equity rewritten",
        ),
        Injection(prop_world, sql("DELETE FROM prop_accounts"), "an account's row lost"),
    ],
    "prop-fills-match-rebuild-sample": [
        Injection(
            prop_world,
            sql("UPDATE prop_fills SET fee = fee + 1 WHERE number = 1"),
            "a fill's fee rewritten",
        ),
        Injection(
            prop_world,
            sql(
                "INSERT INTO prop_fills SELECT account_id, 99, position, kind, client_action_id,"
                " reason, asset, side, 0, price, mark_price, mark_source, mark_observed_at,"
                " slippage_bps, slippage, fee_bps, fee, realized_pnl, position_size, filled_at"
                " FROM prop_fills WHERE number = 1"
            ),
            "a fill the log never made",
        ),
    ],
}

CASES = [
    pytest.param(name, injection, id=f"{name}: {injection.label}")
    for name, injections in INJECTIONS.items()
    for injection in injections
]


def test_every_registered_check_has_an_injected_breach() -> None:
    names = [check.name for check in CHECKS]

    assert len(names) == len(set(names)), "check names are unique"
    assert [n for n in names if not INJECTIONS.get(n)] == [], "a check with no injected breach"
    assert set(INJECTIONS) - set(names) == set(), "an injection for a check not registered"


def test_every_check_states_its_rule_and_its_read_models() -> None:
    for check in CHECKS:
        assert check.rule.strip() and check.reads, check.name


@pytest.mark.parametrize(("name", "injection"), CASES)
def test_each_check_catches_its_breach_and_only_it(
    client: TestClient,
    node: EvmNodeServer,
    services: Services,
    clock: FixedClock,
    name: str,
    injection: Injection,
) -> None:
    world = World(client, node, services, clock)
    injection.world(world)
    before = world.check()
    assert [c.name for c in before.checks] == [c.name for c in CHECKS]
    assert before.ok, before.breaches

    with psycopg.connect(services.url, autocommit=True) as conn:
        injection.inject(conn, world.facts)
    after = world.check()

    failing = [c for c in after.checks if not c.ok]
    assert [c.name for c in failing] == [name], after.breaches
    (check,) = failing
    assert check.breach_count == len(check.breaches) >= 1
    assert "error" not in check.breaches[0], check.breaches
    assert {b["check"] for b in after.breaches} == {name}
    assert not after.ok


# --- one position, results kept, metrics -------------------------------------------------------


def test_a_run_reports_each_check_at_its_position_and_keeps_it(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    world = World(client, node, services, clock)
    prop_world(world)
    paid(client, node)  # the log moves on; only the purchases model reads it
    ProjectionRunner(services.projections, "purchases", services.url).catch_up()
    positions = {s.name: s.position for s in services.projections.statuses()}

    result = reconcile_and_record(
        services.projections.datastore, mapper=services.projections.mapper
    )

    common = min(positions[name] for c in CHECKS for name in c.reads)
    assert result.ok, result.breaches
    assert result.position == common < positions["purchases"]
    at = {c.name: c.position for c in result.checks}
    assert at["one-grant-per-verified-purchase"] == common  # across models: the common one
    assert at["trial-balance"] == positions["ledger"]  # within one: its model's own
    assert at["prop-fills-match-rebuild-sample"] == positions["prop_fills"]
    with psycopg.connect(services.url) as conn:
        kept = conn.execute(
            "SELECT r.position, count(c.name), bool_and(c.ok) FROM reconciliation_checks r"
            " JOIN reconciliation_check_results c USING (checked_at) GROUP BY r.position"
        ).fetchall()
    assert kept == [(common, len(CHECKS), True)]


def test_fills_beyond_the_common_position_are_lag_not_a_breach(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    world = World(client, node, services, clock)
    prop_world(world)
    trade(world, 9, size="5")
    # The fills model reads the new fill; the accounts model (its position) does not yet.
    ProjectionRunner(services.projections, "prop_fills", services.url).catch_up()

    result = world.check()

    assert result.ok, result.breaches
    catch_up(services)
    assert world.check().ok


def test_breaches_reach_health_and_the_metrics_by_check(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    world = World(client, node, services, clock)
    prop_world(world)
    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute("UPDATE prop_positions SET size = size + 1")

    reconcile_and_record(services.projections.datastore, mapper=services.projections.mapper)
    health = client.get("/v1/health/reconciliation", headers=AUDITOR).json()
    metrics = client.get("/metrics", headers=monitor_headers(client)).text

    assert health["status"] == "failing"
    assert {c["name"]: c["breach_count"] for c in health["checks"] if not c["ok"]} == {
        "prop-position-equals-fills": 2
    }
    assert health["position"] is not None
    assert {c["name"]: c["rule"] for c in health["checks"]} == {c.name: c.rule for c in CHECKS}
    assert [b["check"] for b in health["breaches"]] == ["prop-position-equals-fills"] * 2
    assert "pumpparty_reconciliation_breaches 2.0" in metrics
    assert 'pumpparty_reconciliation_check_breaches{check="prop-position-equals-fills"} 2.0' in (
        metrics
    )
    assert 'pumpparty_reconciliation_check_breaches{check="trial-balance"} 0.0' in metrics


def test_a_check_that_cannot_run_fails_alone(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    world = World(client, node, services, clock)
    purchase_world(world)
    with psycopg.connect(services.url, autocommit=True) as conn:
        # A read model's table gone from under its view: that check cannot judge.
        conn.execute("ALTER VIEW entitlements RENAME TO entitlements_gone")
    try:
        result = world.check()
    finally:
        with psycopg.connect(services.url, autocommit=True) as conn:
            conn.execute("ALTER VIEW entitlements_gone RENAME TO entitlements")

    failing = [c for c in result.checks if not c.ok]
    assert [c.name for c in failing] == ["one-grant-per-verified-purchase"]
    assert "error" in failing[0].breaches[0]


def test_a_check_keeps_a_bounded_list_and_counts_every_breach(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    world = World(client, node, services, clock)
    purchase_world(world)
    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ledger_balances (account, balance_minor, entries)"
            " SELECT 'treasury:tampered:' || n, 1, 1 FROM generate_series(1, %s) n",
            (MAX_BREACHES_SHOWN + 10,),
        )

    result = reconcile_and_record(
        services.projections.datastore, mapper=services.projections.mapper
    )

    (check,) = [c for c in result.checks if not c.ok]
    assert check.name == "balance-equals-entries"
    assert (check.breach_count, len(check.breaches)) == (
        MAX_BREACHES_SHOWN + 10,
        MAX_BREACHES_SHOWN,
    )
    assert all(b["account"].startswith("treasury:tampered:") for b in check.breaches)
