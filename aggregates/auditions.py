"""An audition: a published clone version on trial, in one or more attempts.

Submitting pins the rule set and starts attempt 1 on its own prop account. An attempt ends
passed or failed, with the metrics it was judged on; a failed audition may start another
attempt (a free retry within the policy, or one paid with a new entitlement), and every
attempt's history stays. An admin may void the audition, once; a voided audition is never
evaluated again. Evaluation takes the verdict as an argument (see `audition_rules`), and
the time too: the aggregate never reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from aggregates.audition_rules import AuditionRules, Verdict
from aggregates.base import DomainAggregate
from aggregates.entitlements import ReasonRequiredError
from aggregates.errors import ConflictError, InvalidCommandError, PaymentRequiredError


class AuditionStatus(StrEnum):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    VOIDED = "voided"


class EndedBy(StrEnum):
    """What ended an attempt: its due time, a breach before it, or an admin's request."""

    DUE = "due"
    BREACH = "breach"
    ADMIN = "admin"


class CloneVersionNotPublishedError(InvalidCommandError):
    code = "clone-version-not-published"


class EntitlementRequiredError(PaymentRequiredError):
    code = "entitlement-required"


class AuditionNotRetryableError(ConflictError):
    code = "audition-not-retryable"


class AuditionNotRunningError(ConflictError):
    code = "audition-not-running"


class AuditionAlreadyVoidedError(ConflictError):
    code = "audition-already-voided"


@dataclass(frozen=True)
class Attempt:
    """One attempt as the audition records it (the state keeps plain dicts of these)."""

    number: int
    prop_account_id: UUID
    entitlement_id: UUID | None
    """The entitlement this attempt consumed; None for a free retry."""
    started_at: datetime
    due_at: datetime
    request_key: str | None
    status: AuditionStatus = AuditionStatus.RUNNING
    ended_by: str | None = None
    evaluated_at: datetime | None = None
    failed_rules: tuple[str, ...] = ()
    metrics: dict[str, Any] | None = None

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Attempt:
        return cls(
            **{
                **state,
                "status": AuditionStatus(state["status"]),
                "failed_rules": tuple(state["failed_rules"]),
            }
        )


class Audition(DomainAggregate):
    class Submitted(DomainAggregate.Created):
        owner_id: UUID
        clone_id: UUID
        version_hash: str
        rules: dict[str, Any]
        request_fingerprint: str

    class AttemptStarted(DomainAggregate.Event):
        number: int
        prop_account_id: UUID
        entitlement_id: UUID | None
        started_at: datetime
        due_at: datetime
        request_key: str | None

    class Passed(DomainAggregate.Event):
        number: int
        metrics: dict[str, Any]
        ended_by: str
        evaluated_at: datetime

    class Failed(DomainAggregate.Event):
        number: int
        metrics: dict[str, Any]
        failed_rules: list[str]
        ended_by: str
        evaluated_at: datetime

    class Voided(DomainAggregate.Event):
        number: int
        reason: str
        restored_entitlement_id: UUID | None

    @event(Submitted)
    def __init__(
        self,
        id: UUID,
        owner_id: UUID,
        clone_id: UUID,
        version_hash: str,
        rules: dict[str, Any],
        request_fingerprint: str,
    ) -> None:
        self.owner_id = owner_id
        self.clone_id = clone_id
        self.version_hash = version_hash
        self.rules = rules
        self.request_fingerprint = request_fingerprint
        self.status = AuditionStatus.RUNNING
        self.attempt_states: list[dict[str, Any]] = []
        self.void_reason: str | None = None
        self.restored_entitlement_id: UUID | None = None

    @classmethod
    def submit(
        cls,
        id: UUID,
        *,
        owner_id: UUID,
        clone_id: UUID,
        version_hash: str,
        rules: AuditionRules,
        request_fingerprint: str,
    ) -> Audition:
        """A new audition; the caller starts attempt 1 in the same command."""
        return cls(
            id=id,
            owner_id=owner_id,
            clone_id=clone_id,
            version_hash=version_hash,
            rules=rules.to_state(),
            request_fingerprint=request_fingerprint,
        )

    # --- reading the state -----------------------------------------------------------------

    @property
    def rule_set(self) -> AuditionRules:
        return AuditionRules.from_state(self.rules)

    @property
    def attempts(self) -> list[Attempt]:
        return [Attempt.from_state(state) for state in self.attempt_states]

    @property
    def current(self) -> Attempt:
        return Attempt.from_state(self.attempt_states[-1])

    @property
    def next_number(self) -> int:
        return len(self.attempt_states) + 1

    def attempt_for_key(self, key: str) -> Attempt | None:
        """The attempt a request with this idempotency key started, if one did."""
        return next((a for a in self.attempts if a.request_key == key), None)

    def is_due(self, now: datetime) -> bool:
        return self.status is AuditionStatus.RUNNING and now >= self.current.due_at

    def free_retries_used(self) -> int:
        return sum(1 for attempt in self.attempts[1:] if attempt.entitlement_id is None)

    # --- commands --------------------------------------------------------------------------

    def start_attempt(
        self,
        *,
        prop_account_id: UUID,
        entitlement_id: UUID | None,
        now: datetime,
        request_key: str | None,
    ) -> Attempt:
        """Attempt 1 at submission, or a retry of a failed audition."""
        if self.attempt_states:
            self.check_retryable()
        self._attempt_started(
            number=self.next_number,
            prop_account_id=prop_account_id,
            entitlement_id=entitlement_id,
            started_at=now,
            due_at=now + self.rule_set.duration,
            request_key=request_key,
        )
        return self.current

    def retry_is_free(self, now: datetime) -> bool:
        """Whether a retry now needs no new entitlement: free retries remain, and the last
        attempt failed no longer ago than the retry window."""
        self.check_retryable()
        rules, failed_at = self.rule_set, self.current.evaluated_at
        assert failed_at is not None  # a failed attempt was evaluated
        return self.free_retries_used() < rules.free_retries and now <= failed_at + (
            rules.retry_window
        )

    def record_verdict(self, verdict: Verdict, now: datetime, ended_by: EndedBy) -> None:
        self.check_running()
        number = self.current.number
        if verdict.passed:
            self._passed(
                number=number, metrics=verdict.metrics, ended_by=ended_by.value, evaluated_at=now
            )
        else:
            self._failed(
                number=number,
                metrics=verdict.metrics,
                failed_rules=list(verdict.failed_rules),
                ended_by=ended_by.value,
                evaluated_at=now,
            )

    def void(self, reason: str, restored_entitlement_id: UUID | None) -> None:
        self.check_voidable(reason)
        self._voided(
            number=self.current.number,
            reason=reason,
            restored_entitlement_id=restored_entitlement_id,
        )

    def check_running(self) -> None:
        if self.status is not AuditionStatus.RUNNING:
            raise AuditionNotRunningError(f"the audition is {self.status.value}")

    def check_retryable(self) -> None:
        if self.status is not AuditionStatus.FAILED:
            raise AuditionNotRetryableError(
                f"only a failed audition may be retried; this one is {self.status.value}"
            )

    def check_voidable(self, reason: str) -> None:
        if not reason.strip():
            raise ReasonRequiredError("voiding an audition needs a reason")
        if self.status is AuditionStatus.VOIDED:
            raise AuditionAlreadyVoidedError("the audition is already voided")

    # --- applying (runs again on every replay: assignments only) ---------------------------

    def _end_current(self, status: AuditionStatus, **changes: Any) -> None:
        self.attempt_states[-1] = {**self.attempt_states[-1], "status": status.value, **changes}

    @event(AttemptStarted)
    def _attempt_started(
        self,
        number: int,
        prop_account_id: UUID,
        entitlement_id: UUID | None,
        started_at: datetime,
        due_at: datetime,
        request_key: str | None,
    ) -> None:
        self.status = AuditionStatus.RUNNING
        self.attempt_states = [
            *self.attempt_states,
            {
                "number": number,
                "prop_account_id": prop_account_id,
                "entitlement_id": entitlement_id,
                "started_at": started_at,
                "due_at": due_at,
                "request_key": request_key,
                "status": AuditionStatus.RUNNING.value,
                "ended_by": None,
                "evaluated_at": None,
                "failed_rules": [],
                "metrics": None,
            },
        ]

    @event(Passed)
    def _passed(
        self, number: int, metrics: dict[str, Any], ended_by: str, evaluated_at: datetime
    ) -> None:
        self.status = AuditionStatus.PASSED
        self._end_current(
            AuditionStatus.PASSED, metrics=metrics, ended_by=ended_by, evaluated_at=evaluated_at
        )

    @event(Failed)
    def _failed(
        self,
        number: int,
        metrics: dict[str, Any],
        failed_rules: list[str],
        ended_by: str,
        evaluated_at: datetime,
    ) -> None:
        self.status = AuditionStatus.FAILED
        self._end_current(
            AuditionStatus.FAILED,
            metrics=metrics,
            failed_rules=list(failed_rules),
            ended_by=ended_by,
            evaluated_at=evaluated_at,
        )

    @event(Voided)
    def _voided(self, number: int, reason: str, restored_entitlement_id: UUID | None) -> None:
        if self.status is AuditionStatus.RUNNING:
            self._end_current(AuditionStatus.VOIDED)
        self.status = AuditionStatus.VOIDED
        self.void_reason = reason
        self.restored_entitlement_id = restored_entitlement_id
