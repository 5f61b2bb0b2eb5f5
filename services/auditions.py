"""Audition commands: submit, retry, evaluate (due, breached, or now), void; and the
evaluator job that evaluates every due audition on a cadence.

Each command is one unit of work: submitting consumes an entitlement, creates the audition
and opens its prop account in one transaction; evaluating records the verdict and closes
the account together (a judged attempt's account is done: no job touches it again), and a
pass queues the clone for the arena; voiding closes the account and restores the
entitlement with the void. Which entitlements a user holds is read from the economy's read
model, but the entitlement itself is loaded and consumed inside the command, so when two
submissions race for one entitlement the store's version check lets exactly one consume
it. The loss limits a submission pins are the prop rule set's own (`audition_rules`),
never a second value from settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from aggregates.audition_rules import AccountFigures, AuditionRules, judge
from aggregates.auditions import (
    Attempt,
    Audition,
    AuditionStatus,
    CloneVersionNotPublishedError,
    EndedBy,
    EntitlementRequiredError,
)
from aggregates.base import CommandContext, fingerprint
from aggregates.clones import Clone
from aggregates.entitlements import Entitlement, EntitlementStatus
from aggregates.errors import DomainError, NotFoundError
from aggregates.ports import PriceSource
from aggregates.prop_accounts import CLOSED, PropAccount
from aggregates.prop_rules import rule_set
from runtime.clock import Clock
from runtime.leases import lease
from services.arena import queue_for_arena
from services.cloning import owned_clone
from services.eventlog import EventLog, UnitOfWork, Written
from services.jobs import job_context
from services.prop_trading import latest_marks, open_account_in

if TYPE_CHECKING:
    from runtime.settings import Settings

log = logging.getLogger(__name__)

EVALUATOR_JOB = "audition_evaluator"
EVALUATOR_LEASE = f"job:{EVALUATOR_JOB}"
"""The advisory lock one evaluator holds for its whole round, across every process."""


@dataclass(frozen=True)
class AttemptState:
    """What a submit or a retry answers: the audition and the attempt now running."""

    audition_id: UUID
    status: AuditionStatus
    attempt: Attempt


@dataclass(frozen=True)
class Evaluation:
    audition_id: UUID
    number: int
    status: AuditionStatus
    failed_rules: list[str]
    ended_by: EndedBy


@dataclass(frozen=True)
class VoidState:
    audition_id: UUID
    restored_entitlement_id: UUID | None


def audition_rules(settings: Settings) -> AuditionRules:
    """The rule set in force: what a submission pins. The prop rule set is the latest
    `audition` version, and the loss limits are its own; the rest comes from settings."""
    return AuditionRules.on(
        rule_set("audition"),
        duration_seconds=settings.audition_duration,
        starting_equity=settings.audition_starting_equity,
        profit_target=settings.audition_profit_target,
        min_trades=settings.audition_min_trades,
        min_active_days=settings.audition_min_active_days,
        free_retries=settings.audition_free_retries,
        retry_window_seconds=settings.audition_retry_window,
    )


def consume_entitlement(
    unit: UnitOfWork, owner_id: UUID, audition_id: UUID, candidates: Sequence[UUID]
) -> UUID:
    """Consume the first of `candidates` (ids from the read model, which may lag) that the
    store says is still the owner's and available; none left is a 402."""
    for entitlement_id in candidates:
        entitlement = unit.find(Entitlement, entitlement_id)
        if (
            entitlement is not None
            and entitlement.user_id == owner_id
            and entitlement.kind == "audition"
            and entitlement.status is EntitlementStatus.AVAILABLE
        ):
            entitlement.consume(audition_id)
            return entitlement.id
    raise EntitlementRequiredError(
        "an audition needs an available audition entitlement: buy one with an audition quote"
    )


def _start_attempt(
    unit: UnitOfWork,
    audition: Audition,
    entitlement_id: UUID | None,
    context: CommandContext,
    request_key: str | None,
) -> Attempt:
    """Open the attempt's own prop account (named by audition and attempt) and start it."""
    rules = audition.rule_set
    account = open_account_in(
        unit,
        key=f"audition:{audition.id}:{audition.next_number}",
        owner_id=audition.owner_id,
        clone_id=audition.clone_id,
        clone_version_hash=audition.version_hash,
        purpose="audition",
        starting_equity=rules.starting_equity,
        rule_set_name=rules.prop_rule_set,
        rule_set_version=rules.prop_rule_set_version,
    )
    return audition.start_attempt(
        prop_account_id=account.id,
        entitlement_id=entitlement_id,
        now=context.occurred_at,
        request_key=request_key,
    )


def owned_audition(unit: UnitOfWork, audition_id: UUID, owner_id: UUID) -> Audition:
    audition = unit.get(Audition, audition_id)
    if audition.owner_id != owner_id:
        raise NotFoundError(f"Audition {audition_id} not found")
    return audition


def submit_audition(
    event_log: EventLog,
    context: CommandContext,
    *,
    owner_id: UUID,
    clone_id: UUID,
    version_hash: str,
    key: str,
    rules: AuditionRules,
    entitlements: Sequence[UUID],
) -> Written[AttemptState]:
    """Submit a published version of the owner's clone: consume one entitlement, create the
    audition and open attempt 1's prop account, at once. Once per (owner, key)."""
    request = fingerprint({"clone_id": clone_id, "version_hash": version_hash})

    def decide(unit: UnitOfWork) -> AttemptState:
        def create(audition_id: UUID) -> Audition:
            clone = owned_clone(unit, clone_id, owner_id)
            clone.check_not_archived()
            clone.check_not_banned()
            if not clone.has_version(version_hash):
                raise CloneVersionNotPublishedError(
                    f"{version_hash} is not a published version of clone {clone_id}"
                )
            entitlement_id = consume_entitlement(unit, owner_id, audition_id, entitlements)
            audition = Audition.submit(
                audition_id,
                owner_id=owner_id,
                clone_id=clone_id,
                version_hash=version_hash,
                rules=rules,
                request_fingerprint=request,
            )
            attempt = _start_attempt(unit, audition, entitlement_id, context, request_key=None)
            # Written, not only read: a concurrent archive or ban makes this save conflict.
            clone.enter_audition(audition_id, attempt.number)
            return audition

        # Keys are scoped to their owner, so one user's key never names another's audition.
        audition = unit.create_once(Audition, f"{owner_id}:{key}", request, create)
        return AttemptState(audition.id, audition.status, audition.attempts[0])

    return event_log.execute(context, decide)


def retry_audition(
    event_log: EventLog,
    context: CommandContext,
    *,
    audition_id: UUID,
    owner_id: UUID,
    key: str | None,
    entitlements: Sequence[UUID],
) -> Written[AttemptState]:
    """Start the next attempt of a failed audition on a new prop account: free within the
    retry policy, otherwise paid with another entitlement. A repeat of a key that already
    started an attempt answers with that attempt."""

    def decide(unit: UnitOfWork) -> AttemptState:
        audition = owned_audition(unit, audition_id, owner_id)
        started = audition.attempt_for_key(key) if key is not None else None
        if started is not None:
            return AttemptState(audition.id, audition.status, started)
        clone = unit.get(Clone, audition.clone_id)  # banned or archived since: no new attempt
        clone.check_not_archived()
        clone.check_not_banned()
        entitlement_id = None
        if not audition.retry_is_free(context.occurred_at):
            entitlement_id = consume_entitlement(unit, owner_id, audition.id, entitlements)
        attempt = _start_attempt(unit, audition, entitlement_id, context, request_key=key)
        clone.enter_audition(audition.id, attempt.number)  # conflicts with an archive or ban
        return AttemptState(audition.id, audition.status, attempt)

    return event_log.execute(context, decide)


def figures_of(account: PropAccount) -> AccountFigures:
    return AccountFigures(
        starting_equity=account.starting_equity,
        equity=account.equity,
        worst_drawdown=account.worst_drawdown,
        worst_daily_loss=account.worst_daily_loss,
        trades=account.fill_count,
        active_days=len(account.active_days),
        breach=account.breach,
    )


def evaluate_audition(
    event_log: EventLog,
    context: CommandContext,
    prices: PriceSource,
    audition_id: UUID,
    *,
    now_requested: bool = False,
) -> Written[Evaluation | None]:
    """Judge the running attempt: at or past its due time on every rule, before it only on
    a breach; `now_requested` (an admin) judges every rule at once. The account is valued
    at the latest marks first, and closed with the verdict (what it still holds flattened
    at those marks), so nothing appends to it afterwards. None when there is nothing to
    judge yet (or any more: another evaluator got there first, or the audition was voided);
    an admin asking for a judgement that cannot be made gets the error instead."""
    now = context.occurred_at

    def decide(unit: UnitOfWork) -> Evaluation | None:
        audition = unit.get(Audition, audition_id)
        if audition.status is not AuditionStatus.RUNNING:
            if now_requested:
                audition.check_running()
            return None
        attempt = audition.current
        account = unit.get(PropAccount, attempt.prop_account_id)
        marks = latest_marks(prices, account.positions)
        account.revalue(marks, now)
        due = now_requested or audition.is_due(now)
        verdict = judge(audition.rule_set, figures_of(account), due=due)
        if verdict is None:
            return None
        ended_by = EndedBy.ADMIN if now_requested else EndedBy.DUE if due else EndedBy.BREACH
        audition.record_verdict(verdict, now, ended_by)
        if account.status != CLOSED:
            account.close(f"audition {audition.status.value}", marks, now)
        if verdict.passed:  # the pass queues the clone for the arena, with the verdict
            queue_for_arena(
                unit,
                audition.clone_id,
                audition.owner_id,
                audition_id=audition.id,
                attempt=attempt.number,
                passed_at=now,
            )
        return Evaluation(
            audition.id, attempt.number, audition.status, verdict.failed_rules, ended_by
        )

    return event_log.execute(context, decide)


def void_audition(
    event_log: EventLog,
    context: CommandContext,
    prices: PriceSource,
    audition_id: UUID,
    reason: str,
) -> Written[VoidState]:
    """Void for good: the attempt's account is closed (positions flattened at the latest
    marks), and the entitlement that paid for the attempt is restored, unless the attempt
    is a free retry (the retry already used the audition's entitlement)."""

    def decide(unit: UnitOfWork) -> VoidState:
        audition = unit.get(Audition, audition_id)
        audition.check_voidable(reason)
        attempt = audition.current
        account = unit.get(PropAccount, attempt.prop_account_id)
        if account.status != CLOSED:
            marks = latest_marks(prices, account.positions)
            account.close(f"audition voided: {reason}", marks, context.occurred_at)
        restored = None
        if attempt.entitlement_id is not None:
            entitlement = unit.get(Entitlement, attempt.entitlement_id)
            # An admin may have revoked it meanwhile: then there is nothing to give back.
            if (
                entitlement.status is EntitlementStatus.CONSUMED
                and entitlement.consumed_by == audition.id
            ):
                entitlement.restore(audition.id, f"audition voided: {reason}")
                restored = entitlement.id
        audition.void(reason, restored)
        return VoidState(audition.id, restored)

    return event_log.execute(context, decide)


# --- the evaluator job ---------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluateDueAuditions:
    """One round of the evaluator: every audition the queue shows due or breached is judged;
    a round answers how many got a verdict. Only one round runs at a time across processes
    (the `job:audition_evaluator` lease); a second evaluator started meanwhile does nothing.
    Should the queue lag, the audition's own status (under optimistic concurrency) still
    lets each attempt be judged once."""

    event_log: EventLog
    prices: PriceSource
    due: Callable[[datetime], list[UUID]]
    clock: Clock
    url: str

    def __call__(self) -> int:
        with lease(self.url, EVALUATOR_LEASE) as held:
            if not held:
                log.info("%s: another evaluator holds the lease", EVALUATOR_JOB)
                return 0
            now = self.clock()
            evaluated = 0
            for audition_id in self.due(now):
                context = job_context(EVALUATOR_JOB, lambda: now, str(audition_id))
                try:
                    written = evaluate_audition(self.event_log, context, self.prices, audition_id)
                except DomainError as error:  # one audition's refusal never stops the round
                    log.warning("%s skipped audition %s: %s", EVALUATOR_JOB, audition_id, error)
                    continue
                evaluated += written.result is not None
            return evaluated
