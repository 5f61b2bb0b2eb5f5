"""Auditions against real PostgreSQL: entitlements consumed once under races, the evaluator's
lease and exactly-once verdicts, breaches, retries and voids, and the read models."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.rows import dict_row

from aggregates.auditions import (
    Audition,
    AuditionAlreadyVoidedError,
    AuditionNotRunningError,
    EntitlementRequiredError,
)
from aggregates.clones import Clone, CloneBannedError
from aggregates.entitlements import Entitlement, EntitlementStatus
from aggregates.errors import IdempotencyKeyReusedError
from aggregates.prop_accounts import ActionRequest, ActionResult, PropAccount
from aggregates.prop_rules import rule_set
from ingest.prices import PostgresPriceSource
from runtime.clock import FixedClock
from runtime.settings import Settings
from scripts.worker import Worker
from services import auditions as auditioning
from services import prop_trading
from services.auditions import EVALUATOR_LEASE, AttemptState, EvaluateDueAuditions
from services.bootstrap import Services
from services.eventlog import Written
from tests.support.auditions import (
    context_at,
    grant_entitlement,
    published_version,
    record_mark,
    short_rules,
)
from tests.support.jobs import run_job
from tests.support.projections import catch_up

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DUE = NOON + timedelta(days=2)
A = TypeVar("A")
OWNER = UUID("00000000-0000-4000-8000-00000000a0d1")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return short_rules(settings)


def submit(
    services: Services,
    entitlements: list[UUID],
    *,
    version: tuple[UUID, str] | None = None,
    key: str = "RETRO-CLOCK",
    owner_id: UUID = OWNER,
) -> Written[AttemptState]:
    clone_id, version_hash = version or published_version(services, owner_id, NOON)
    return auditioning.submit_audition(
        services.event_log,
        context_at(NOON),
        owner_id=owner_id,
        clone_id=clone_id,
        version_hash=version_hash,
        key=key,
        rules=auditioning.audition_rules(services.settings),
        entitlements=entitlements,
    )


def new_audition(services: Services) -> tuple[AttemptState, UUID]:
    """A running audition of OWNER (its first attempt started at noon) and its entitlement."""
    entitlement_id = grant_entitlement(services, OWNER, NOON)
    return submit(services, [entitlement_id], key=uuid4().hex).result, entitlement_id


def retry(services: Services, audition_id: UUID, at: datetime, entitlements: list[UUID]) -> Any:
    return auditioning.retry_audition(
        services.event_log,
        context_at(at),
        audition_id=audition_id,
        owner_id=OWNER,
        key=None,
        entitlements=entitlements,
    )


def void(services: Services, audition_id: UUID, at: datetime = NOON + timedelta(hours=1)) -> Any:
    prices = PostgresPriceSource(services.projections.datastore)
    return auditioning.void_audition(
        services.event_log, context_at(at, "user:admin"), prices, audition_id, "data outage"
    )


def engine_buys(services: Services, account_id: UUID, size: str, at: datetime) -> ActionResult:
    """The engine buys `size` BTC on the account at the latest mark (one action a time)."""
    return prop_trading.submit_action(
        services.event_log,
        context_at(at, "service:engine"),
        PostgresPriceSource(services.projections.datastore),
        account_id,
        ActionRequest(f"buy-{at.isoformat()}", "BTC", "buy", size=Decimal(size)),
        max_mark_age=timedelta(seconds=60),
    ).result


def marked_round(services: Services, at: datetime, price: str) -> Any:
    """A mark at `price`, then one round of the mark-to-market job at `at`."""
    record_mark(services, at, price)
    return run_job(services, "prop_mark_to_market", FixedClock(at))


def load(services: Services, cls: type[A], aggregate_id: UUID) -> A:
    aggregate: object = services.event_log.repository.get(aggregate_id)
    assert isinstance(aggregate, cls)
    return aggregate


def event_types(services: Services, aggregate_id: UUID) -> list[str]:
    return [type(e).__name__ for e in services.event_log.events.get(aggregate_id)]


def verdicts(services: Services, audition_id: UUID) -> list[str]:
    return [t for t in event_types(services, audition_id) if t in ("Passed", "Failed")]


def rows(services: Services, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(services.url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released at once; each one's result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# --- submitting ----------------------------------------------------------------------------


def test_two_concurrent_submissions_with_one_entitlement_make_one_audition(
    services: Services,
) -> None:
    entitlement_id = grant_entitlement(services, OWNER, NOON)
    version = published_version(services, OWNER, NOON)

    results = together(
        lambda: submit(services, [entitlement_id], version=version, key="first"),
        lambda: submit(services, [entitlement_id], version=version, key="second"),
    )

    written = [r for r in results if isinstance(r, Written)]
    refused = [r for r in results if isinstance(r, EntitlementRequiredError)]
    assert (len(written), len(refused)) == (1, 1), results
    entitlement = load(services, Entitlement, entitlement_id)
    assert entitlement.consumed_by == written[0].result.audition_id
    submitted = rows(
        services,
        "SELECT count(*) AS n FROM pumpparty_events WHERE topic LIKE %s",
        "%Audition.Submitted",
    )
    assert submitted == [{"n": 1}]


def test_a_repeated_key_answers_with_the_first_audition_and_consumes_once(
    services: Services,
) -> None:
    first, second = (
        grant_entitlement(services, OWNER, NOON),
        grant_entitlement(services, OWNER, NOON),
    )
    version = published_version(services, OWNER, NOON)
    original = submit(services, [first, second], version=version).result

    repeat = submit(services, [second], version=version).result

    assert repeat == original
    assert load(services, Entitlement, second).status is EntitlementStatus.AVAILABLE


def test_a_repeated_key_with_another_version_is_a_conflict(services: Services) -> None:
    entitlement_id = grant_entitlement(services, OWNER, NOON)
    submit(services, [entitlement_id])

    with pytest.raises(IdempotencyKeyReusedError):
        submit(services, [entitlement_id], version=published_version(services, OWNER, NOON))


def test_an_entitlement_the_read_model_still_shows_free_is_passed_over(
    services: Services,
) -> None:
    (_, spent), fresh = new_audition(services), grant_entitlement(services, OWNER, NOON)

    attempt = submit(services, [spent, fresh], key="another").result.attempt

    assert attempt.entitlement_id == fresh


def test_another_users_entitlement_is_never_consumed(services: Services) -> None:
    theirs = grant_entitlement(services, uuid4(), NOON)

    with pytest.raises(EntitlementRequiredError):
        submit(services, [theirs])


def test_submitting_opens_the_attempts_prop_account_with_the_pinned_equity(
    services: Services,
) -> None:
    state, _ = new_audition(services)

    account = load(services, PropAccount, state.attempt.prop_account_id)

    assert (account.purpose, account.owner_id, account.starting_equity) == (
        "audition",
        OWNER,
        Decimal("10000"),
    )
    assert state.attempt.due_at == DUE


# --- evaluating ----------------------------------------------------------------------------


def test_a_due_audition_is_judged_on_every_rule_and_its_account_closed(
    services: Services,
) -> None:
    state, _ = new_audition(services)
    catch_up(services)

    evaluated = run_job(services, "audition_evaluator", FixedClock(DUE))

    audition = load(services, Audition, state.audition_id)
    account = load(services, PropAccount, state.attempt.prop_account_id)
    assert evaluated == 1
    assert audition.current.failed_rules == ("profit-target", "min-trades", "min-active-days")
    assert audition.current.ended_by == "due"
    assert event_types(services, account.id)[-1] == "Closed"
    assert account.status == "closed"
    catch_up(services)
    assert rows(
        services,
        "SELECT status, status_reason, closed_at FROM prop_accounts WHERE account_id = %s",
        account.id,
    ) == [{"status": "closed", "status_reason": "audition failed", "closed_at": DUE}]


def test_a_judged_audition_with_positions_is_flattened_closed_and_then_left_alone(
    services: Services,
) -> None:
    state, _ = new_audition(services)
    account_id = state.attempt.prop_account_id
    record_mark(services, NOON, "100")
    assert engine_buys(services, account_id, "1", NOON).status == "filled"
    record_mark(services, DUE, "104")
    catch_up(services)

    run_job(services, "audition_evaluator", FixedClock(DUE))
    catch_up(services)
    judged = len(event_types(services, account_id))
    rounds = [
        marked_round(services, DUE + timedelta(minutes=10 * n), str(100 + n % 7))
        for n in range(1, 24 * 6 + 1)
    ]

    assert event_types(services, account_id)[-3:] == ["Marked", "Flattened", "Closed"]
    account = load(services, PropAccount, account_id)
    assert (account.status, account.positions) == ("closed", {})
    # A day of mark rounds with moving prices: the closed account gets nothing more.
    assert rounds == [0] * len(rounds)
    assert len(event_types(services, account_id)) == judged


def test_an_audition_not_yet_due_is_left_alone(services: Services) -> None:
    state, _ = new_audition(services)
    catch_up(services)

    evaluated = run_job(services, "audition_evaluator", FixedClock(DUE - timedelta(seconds=1)))

    assert evaluated == 0 and verdicts(services, state.audition_id) == []


def test_two_evaluators_started_together_judge_each_due_audition_once(
    services: Services,
) -> None:
    auditions = [new_audition(services)[0].audition_id for _ in range(3)]
    catch_up(services)

    results = together(
        lambda: run_job(services, "audition_evaluator", FixedClock(DUE)),
        lambda: run_job(services, "audition_evaluator", FixedClock(DUE)),
    )

    assert sorted(results) == [0, 3]
    assert [verdicts(services, audition_id) for audition_id in auditions] == [["Failed"]] * 3


def test_an_evaluator_without_the_lease_does_nothing(services: Services) -> None:
    state, _ = new_audition(services)
    catch_up(services)

    with psycopg.connect(services.url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtext(%s))", (EVALUATOR_LEASE,))
        evaluated = run_job(services, "audition_evaluator", FixedClock(DUE))

    assert evaluated == 0 and verdicts(services, state.audition_id) == []


def test_a_queue_that_lags_never_judges_an_attempt_twice(services: Services) -> None:
    state, _ = new_audition(services)
    catch_up(services)
    run_job(services, "audition_evaluator", FixedClock(DUE))

    again = run_job(services, "audition_evaluator", FixedClock(DUE + timedelta(minutes=1)))

    assert again == 0 and verdicts(services, state.audition_id) == ["Failed"]


def test_a_breach_fails_the_audition_before_it_is_due(services: Services) -> None:
    state, _ = new_audition(services)
    account_id = state.attempt.prop_account_id
    record_mark(services, NOON, "100")
    assert engine_buys(services, account_id, "50", NOON).status == "filled"
    catch_up(services)
    later = NOON + timedelta(hours=1)
    record_mark(services, later, "89")  # 50 x -11 = -550: past the prop engine's 5% a day
    run_job(services, "prop_mark_to_market", FixedClock(later))
    catch_up(services)

    evaluated = run_job(services, "audition_evaluator", FixedClock(later))

    audition = load(services, Audition, state.audition_id)
    assert evaluated == 1
    assert (audition.status, audition.current.ended_by) == ("failed", "breach")
    assert audition.current.failed_rules == ("daily-loss-limit",)
    assert event_types(services, account_id)[-4:] == ["Breached", "Frozen", "Flattened", "Closed"]


def test_the_loss_limits_are_one_value_wherever_they_are_read_and_enforced(
    services: Services,
) -> None:
    state, _ = new_audition(services)
    account_id = state.attempt.prop_account_id
    pinned = load(services, Audition, state.audition_id).rule_set
    opened = next(iter(services.event_log.events.get(account_id)))
    assert isinstance(opened, PropAccount.Opened)
    catalogue = rule_set(pinned.prop_rule_set, pinned.prop_rule_set_version)
    catch_up(services)
    shown = rows(
        services,
        "SELECT a.rules->>'daily_loss_limit' AS audition_daily,"
        " a.rules->>'max_drawdown' AS audition_drawdown,"
        " p.rules->>'daily_loss_limit' AS account_daily,"
        " p.rules->>'max_drawdown' AS account_drawdown"
        " FROM auditions a JOIN prop_accounts p ON p.account_id = a.prop_account_id",
    )

    # One value: the audition's pinned rules, the account's pinned rules, the catalogue, and
    # both read models.
    limits = (pinned.daily_loss_limit, pinned.max_drawdown)
    assert limits == (Decimal("0.05"), Decimal("0.10"))
    assert (opened.rules["daily_loss_limit"], opened.rules["max_drawdown"]) == limits
    assert (catalogue.daily_loss_limit, catalogue.max_drawdown) == limits
    assert shown == [
        {
            "audition_daily": "0.05",
            "audition_drawdown": "0.10",
            "account_daily": "0.05",
            "account_drawdown": "0.10",
        }
    ]

    # And one limit enforced: 50 BTC bought at 100.02 with a 2.5005 fee, so equity is
    # 4996.4995 + 50 x price against a floor of 10000 - 0.05 x 10000 = 9500.
    floor = pinned.starting_equity * (1 - pinned.daily_loss_limit)
    record_mark(services, NOON, "100")
    assert engine_buys(services, account_id, "50", NOON).status == "filled"
    catch_up(services)
    within, past = NOON + timedelta(hours=1), NOON + timedelta(hours=2)
    assert marked_round(services, within, "90.0701") == 1  # equity 9500.0045: on the limit
    rejected = engine_buys(services, account_id, "1", within)  # its fee would cross the floor
    catch_up(services)
    assert run_job(services, "audition_evaluator", FixedClock(within)) == 0
    assert marked_round(services, past, "90.07") == 1  # equity 9499.9995: just past it
    catch_up(services)
    evaluated = run_job(services, "audition_evaluator", FixedClock(past))

    assert (rejected.status, rejected.reason) == ("rejected", "daily-loss-limit")
    breached = [
        e for e in services.event_log.events.get(account_id) if isinstance(e, PropAccount.Breached)
    ]
    assert [(b.rule, b.equity, b.floor) for b in breached] == [
        ("daily-loss-limit", Decimal("9499.9995"), floor)
    ]
    audition = load(services, Audition, state.audition_id)
    assert evaluated == 1
    assert (audition.status, audition.current.ended_by) == ("failed", "breach")
    assert audition.current.failed_rules == ("daily-loss-limit",)
    assert audition.current.metrics["worst_daily_loss"] > pinned.daily_loss_limit


def test_evaluating_now_a_judged_audition_is_refused(services: Services) -> None:
    state, _ = new_audition(services)
    catch_up(services)
    run_job(services, "audition_evaluator", FixedClock(DUE))
    prices = PostgresPriceSource(services.projections.datastore)

    with pytest.raises(AuditionNotRunningError):
        auditioning.evaluate_audition(
            services.event_log, context_at(DUE), prices, state.audition_id, now_requested=True
        )


# --- retrying ------------------------------------------------------------------------------


def test_a_retry_inside_the_window_is_a_new_attempt_on_a_new_account_for_free(
    services: Services,
) -> None:
    state, _ = new_audition(services)
    catch_up(services)
    run_job(services, "audition_evaluator", FixedClock(DUE))

    attempt = retry(services, state.audition_id, DUE + timedelta(hours=1), []).result.attempt

    assert (attempt.number, attempt.entitlement_id) == (2, None)
    assert attempt.prop_account_id != state.attempt.prop_account_id
    assert attempt.due_at == DUE + timedelta(days=2, hours=1)


def test_a_retry_past_the_window_consumes_a_new_entitlement(services: Services) -> None:
    state, _ = new_audition(services)
    catch_up(services)
    run_job(services, "audition_evaluator", FixedClock(DUE))
    late = DUE + timedelta(days=1, seconds=1)
    fresh = grant_entitlement(services, OWNER, late)

    attempt = retry(services, state.audition_id, late, [fresh]).result.attempt

    assert attempt.entitlement_id == fresh
    assert load(services, Entitlement, fresh).consumed_by == state.audition_id


def test_a_retry_past_the_policy_without_an_entitlement_is_refused(services: Services) -> None:
    state, _ = new_audition(services)
    catch_up(services)
    run_job(services, "audition_evaluator", FixedClock(DUE))

    with pytest.raises(EntitlementRequiredError):
        retry(services, state.audition_id, DUE + timedelta(days=2), [])


def test_a_clone_banned_since_is_not_retried(services: Services) -> None:
    state, _ = new_audition(services)
    catch_up(services)
    run_job(services, "audition_evaluator", FixedClock(DUE))
    clone_id = load(services, Audition, state.audition_id).clone_id
    services.event_log.execute(context_at(DUE), lambda unit: unit.get(Clone, clone_id).ban("spam"))

    with pytest.raises(CloneBannedError):
        retry(services, state.audition_id, DUE, [])


# --- voiding -------------------------------------------------------------------------------


def test_voiding_closes_the_account_and_restores_the_entitlement_once(
    services: Services,
) -> None:
    state, entitlement_id = new_audition(services)
    first = void(services, state.audition_id)

    with pytest.raises(AuditionAlreadyVoidedError):
        void(services, state.audition_id)

    assert first.result.restored_entitlement_id == entitlement_id
    assert event_types(services, entitlement_id) == ["Granted", "Consumed", "Restored"]
    assert event_types(services, state.attempt.prop_account_id)[-1] == "Closed"


def test_a_voided_audition_is_never_evaluated_even_by_a_lagging_queue(
    services: Services,
) -> None:
    state, _ = new_audition(services)
    catch_up(services)
    void(services, state.audition_id)

    evaluated = run_job(services, "audition_evaluator", FixedClock(DUE))

    assert evaluated == 0 and verdicts(services, state.audition_id) == []


def test_voiding_after_a_free_retry_restores_nothing(services: Services) -> None:
    state, entitlement_id = new_audition(services)
    catch_up(services)
    run_job(services, "audition_evaluator", FixedClock(DUE))
    retry(services, state.audition_id, DUE, [])

    voided = void(services, state.audition_id, DUE + timedelta(hours=1))

    assert voided.result.restored_entitlement_id is None
    entitlement = load(services, Entitlement, entitlement_id)
    assert entitlement.status is EntitlementStatus.CONSUMED


# --- read models and the worker ------------------------------------------------------------


def test_the_queue_follows_attempts_breaches_and_verdicts(services: Services) -> None:
    state, _ = new_audition(services)
    catch_up(services)
    queued = rows(services, "SELECT status, attempt, due_at, breach FROM audition_queue")
    run_job(services, "audition_evaluator", FixedClock(DUE))
    retry(services, state.audition_id, DUE, [])
    catch_up(services)

    requeued = rows(services, "SELECT status, attempt, due_at, breach FROM audition_queue")

    assert queued == [{"status": "running", "attempt": 1, "due_at": DUE, "breach": None}]
    assert requeued == [
        {"status": "running", "attempt": 2, "due_at": DUE + timedelta(days=2), "breach": None}
    ]


def test_the_read_model_keeps_every_attempt(services: Services) -> None:
    state, _ = new_audition(services)
    catch_up(services)
    run_job(services, "audition_evaluator", FixedClock(DUE))
    retry(services, state.audition_id, DUE, [])
    catch_up(services)

    attempts = rows(
        services,
        "SELECT number, status, ended_by, failed_rules FROM audition_attempts ORDER BY number",
    )
    audition = rows(services, "SELECT status, current_attempt FROM auditions")

    assert attempts == [
        {
            "number": 1,
            "status": "failed",
            "ended_by": "due",
            "failed_rules": ["profit-target", "min-trades", "min-active-days"],
        },
        {"number": 2, "status": "running", "ended_by": None, "failed_rules": []},
    ]
    assert audition == [{"status": "running", "current_attempt": 2}]


def test_the_worker_runs_the_evaluator_on_its_cadence(services: Services) -> None:
    job = Worker(services).jobs["audition_evaluator"]

    assert isinstance(job.func, EvaluateDueAuditions)
    assert job.seconds == services.settings.audition_evaluate_interval


def test_an_audition_is_a_replayable_aggregate(services: Services) -> None:
    state, _ = new_audition(services)

    audition = load(services, Audition, state.audition_id)

    assert audition.attempts == [state.attempt]
