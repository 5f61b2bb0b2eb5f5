"""The paid audition, end to end through HTTP: a wallet signs in, pays the fee on-chain (a
loopback JSON-RPC node), gets an entitlement, publishes a clone, submits it, the engine
trades on its prop account with a service token, and the evaluator judges it on a clock
the test moves. Then the same story failing on drawdown (the prop engine's breach ends the
attempt early), retried, and passed; and every read model rebuilt from the log to the same
rows."""

from __future__ import annotations

from fastapi.testclient import TestClient

from projections.rebuild import rebuild
from runtime.clock import FixedClock
from services.bootstrap import Services
from tests.support.evm_node import EvmNodeServer
from tests.support.flow import (
    detail,
    every_table,
    rally_then_crash,
    submit_audition,
    to_due_time,
    trade_up,
)
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.wallets import sign_in


def test_a_paid_audition_that_trades_well_passes(
    client: TestClient, services: Services, node: EvmNodeServer, clock: FixedClock
) -> None:
    # A wallet signs in, pays the fee on-chain and submits a published clone version.
    user, submitted = submit_audition(client, services, node)
    assert (submitted["attempt"], submitted["due_at"]) == (1, "2026-11-27T12:00:00Z")

    # The engine trades on the audition's prop account over two days.
    trade_up(client, services, clock, submitted["prop_account_id"])

    # Nothing is judged before the due time; at it, the evaluator passes the audition.
    catch_up(services)
    assert run_job(services, "audition_evaluator", clock) == 0
    to_due_time(clock, submitted)
    catch_up(services)
    assert run_job(services, "audition_evaluator", clock) == 1

    # The owner reads the verdict, the metrics and the account, closed with the verdict.
    audition = detail(client, services, user, submitted["audition_id"])
    (attempt,) = audition["attempts"]
    assert (audition["status"], attempt["ended_by"], attempt["failed_rules"]) == (
        "passed",
        "due",
        [],
    )
    assert (attempt["metrics"]["trades"], attempt["metrics"]["active_days"]) == (2, 2)
    assert attempt["metrics"]["total_return"].startswith("0.059")
    assert audition["prop_account"]["status"] == "closed"
    assert audition["prop_account"]["equity"] == attempt["metrics"]["equity"]


def test_an_audition_failed_on_drawdown_is_retried_and_passes(
    client: TestClient, services: Services, node: EvmNodeServer, clock: FixedClock
) -> None:
    # Paid, submitted; the engine's position rallies, then falls 10.4% from the peak.
    user, submitted = submit_audition(client, services, node)
    audition_id = submitted["audition_id"]
    rally_then_crash(client, services, clock, submitted["prop_account_id"])

    # The prop engine breached the drawdown limit, so the evaluator fails it at once, long
    # before the due time, on that rule alone: one limit, enforced and judged.
    catch_up(services)
    assert run_job(services, "audition_evaluator", clock) == 1
    failed = detail(client, services, user, audition_id)
    assert failed["status"] == "failed"
    (attempt,) = failed["attempts"]
    assert (attempt["ended_by"], attempt["failed_rules"]) == ("breach", ["max-drawdown"])
    assert attempt["metrics"]["max_drawdown"].startswith("0.104")
    assert attempt["metrics"]["breach"] == "max-drawdown"
    assert failed["rules"]["max_drawdown"] == "0.1"
    assert failed["prop_account"]["status"] == "closed"

    # Within the retry window the owner retries for free, on a new prop account.
    user = sign_in(client, user.wallet)
    retried = client.post(f"/v1/auditions/{audition_id}/retry", headers=user.headers)
    assert retried.status_code == 201, retried.text
    second = retried.json()
    assert (second["attempt"], second["entitlement_id"]) == (2, None)
    assert second["prop_account_id"] != submitted["prop_account_id"]

    # The second attempt trades cleanly and passes; both attempts stay on record.
    trade_up(client, services, clock, second["prop_account_id"])
    to_due_time(clock, second)
    catch_up(services)
    assert run_job(services, "audition_evaluator", clock) == 1
    passed = detail(client, services, user, audition_id)
    assert passed["status"] == "passed"
    assert [(a["number"], a["status"]) for a in passed["attempts"]] == [
        (1, "failed"),
        (2, "passed"),
    ]
    assert passed["prop_account"]["account_id"] == second["prop_account_id"]


def test_rebuilding_every_projection_after_the_flow_yields_identical_rows(
    client: TestClient, services: Services, node: EvmNodeServer, clock: FixedClock
) -> None:
    user, submitted = submit_audition(client, services, node)
    rally_then_crash(client, services, clock, submitted["prop_account_id"])
    catch_up(services)
    assert run_job(services, "audition_evaluator", clock) == 1
    user = sign_in(client, user.wallet)
    client.post(f"/v1/auditions/{submitted['audition_id']}/retry", headers=user.headers)
    catch_up(services)
    before = every_table(services)

    for name, cls in services.projections.classes.items():
        if cls.rebuildable:
            rebuild(services.projections, name)

    assert every_table(services) == before
    assert before["auditions"][0] == 1 and before["audition_attempts"][0] == 2
