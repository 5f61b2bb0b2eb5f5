"""A payment whose check against the chain keeps failing (the loopback node errors for its
tx) is retried with its own backoff, then dead-lettered, while the others settle; replay
checks it again once the node answers; a discarded one is never checked again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from aggregates.base import CommandContext
from runtime.clock import FixedClock
from runtime.settings import Settings
from services import dead_letters
from services.bootstrap import Services
from services.economy import DEPOSIT_JOB, DEPOSIT_VERIFICATION, WITHDRAWAL_VERIFICATION
from services.job_queue import JobQueue, queue_policy
from tests.economy.test_deposits import deposit, pay, shown
from tests.economy.test_purchases import tx
from tests.economy.test_withdrawals import USDC, funded, lease, pay_out, report, requested
from tests.economy.test_withdrawals import shown as withdrawal_shown
from tests.support.evm_node import EvmNodeServer
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.wallets import sign_in

ATTEMPTS = 3
CAP = 60.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "job_max_attempts": ATTEMPTS,
            "job_backoff_base": 10.0,
            "job_backoff_max": CAP,
            "access_token_ttl": 72 * 3600,  # the signed-in users outlive the test clock's hours
        }
    )


def break_receipt(node: EvmNodeServer, tx_hash: str) -> str:
    """The node answers this tx's receipt with a block it does not have (an error for this
    tx only); returns the real block, to put back."""
    receipt = node.chain.receipts[tx_hash]
    real: str = receipt["blockNumber"]
    receipt["blockNumber"] = hex(node.chain.head + 100)
    return real


def admin(clock: FixedClock) -> CommandContext:
    return CommandContext(actor="admin:ops", occurred_at=clock(), correlation_id="dl-RETRO")


def open_rows(services: Services, clock: FixedClock, subject: str) -> dict[str, Any]:
    queue = JobQueue(services.datastore, clock, queue_policy(services.settings))
    return queue.open_items(DEPOSIT_VERIFICATION, [subject])


def test_a_failing_check_backs_off_then_is_dead_while_the_others_settle_and_replay_settles_it(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    good, bad = sign_in(client), sign_in(client)
    pay(node, tx(21), good, confirmations=1)
    pay(node, tx(22), bad, confirmations=1)
    real_block = break_receipt(node, tx(22))
    good_id = deposit(client, good, tx(21)).json()["deposit_id"]
    bad_id = deposit(client, bad, tx(22)).json()["deposit_id"]
    node.chain.head += 2
    catch_up(services)

    first_at = clock()
    first = run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)
    [retry] = open_rows(services, clock, bad_id).values()
    held = run_job(services, DEPOSIT_JOB, clock)  # before its retry is due: not asked
    after_held = open_rows(services, clock, bad_id)[bad_id]
    for _ in range(ATTEMPTS - 1):
        clock.advance(seconds=CAP)
        run_job(services, DEPOSIT_JOB, clock)
    clock.advance(seconds=CAP)
    calls = len(node.calls)
    run_job(services, DEPOSIT_JOB, clock)  # dead: passed by
    catch_up(services)

    assert first == 1 and held == 0
    assert shown(client, good, good_id)["status"] == "verified"
    assert (retry.state, retry.attempts, retry.kind) == ("queued", 1, DEPOSIT_VERIFICATION)
    # The first retry waits base x 2^0 = 10 s, jittered into its upper half.
    assert timedelta(seconds=5) <= retry.run_at - first_at <= timedelta(seconds=10)
    assert after_held.attempts == 1
    assert len(node.calls) == calls, "a dead payment is not checked again"
    [letter] = dead_letters.list_dead_letters(services, kind=DEPOSIT_VERIFICATION)
    assert (letter.subject, letter.state, letter.attempts) == (bad_id, "dead", ATTEMPTS)
    assert letter.error is not None and "rpc-unavailable" in letter.error
    assert dead_letters.dead_letter_counts(services) == {DEPOSIT_VERIFICATION: 1}
    assert shown(client, bad, bad_id)["status"] == "pending_confirmations"

    node.chain.receipts[tx(22)]["blockNumber"] = real_block  # the node is fixed
    dead_letters.replay_dead_letter(services, admin(clock), letter.id, "node fixed")
    settled = run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)

    assert settled == 1
    assert shown(client, bad, bad_id)["status"] == "verified"
    assert dead_letters.dead_letter_counts(services) == {}
    assert open_rows(services, clock, bad_id) == {}


def test_a_discarded_check_is_never_run_again(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = sign_in(client)
    pay(node, tx(23), user, confirmations=5)
    real_block = break_receipt(node, tx(23))
    deposit_id = deposit(client, user, tx(23)).json()["deposit_id"]
    catch_up(services)
    for _ in range(ATTEMPTS):
        run_job(services, DEPOSIT_JOB, clock)
        clock.advance(seconds=CAP)
    [letter] = dead_letters.list_dead_letters(services)

    dead_letters.discard_dead_letter(services, admin(clock), letter.id, "refunded off-chain")
    node.chain.receipts[tx(23)]["blockNumber"] = real_block
    calls = len(node.calls)
    clock.advance(seconds=CAP)
    settled = run_job(services, DEPOSIT_JOB, clock)

    assert settled == 0 and len(node.calls) == calls, "a discarded check never runs again"
    row = JobQueue(services.datastore, clock, queue_policy(services.settings)).get(UUID(letter.id))
    assert row is not None and row.state == "discarded"
    catch_up(services)
    assert shown(client, user, deposit_id)["status"] == "pending_confirmations"


def test_a_withdrawal_whose_check_keeps_failing_is_a_dead_letter_of_its_own_kind(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = funded(client, node, 40 * USDC, 31)
    asked = requested(client, user, "15")
    leased = lease(client, services)
    assert leased is not None
    pay_out(node, tx(31), user.wallet.address, 15 * USDC, confirmations=5)
    real_block = break_receipt(node, tx(31))
    report(client, asked["withdrawal_id"], tx(31), leased["fencing_token"])
    catch_up(services)
    for _ in range(ATTEMPTS):
        run_job(services, DEPOSIT_JOB, clock)
        clock.advance(seconds=CAP)

    [letter] = dead_letters.list_dead_letters(services)
    assert (letter.kind, letter.subject, letter.attempts) == (
        WITHDRAWAL_VERIFICATION,
        asked["withdrawal_id"],
        ATTEMPTS,
    )
    assert withdrawal_shown(client, services, user, asked["withdrawal_id"])["status"] == "executed"

    node.chain.receipts[tx(31)]["blockNumber"] = real_block
    dead_letters.replay_dead_letter(services, admin(clock), letter.id, "node fixed")
    run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)

    assert withdrawal_shown(client, services, user, asked["withdrawal_id"])["status"] == "posted"
    assert dead_letters.dead_letter_counts(services) == {}
