"""Payout authorization: admins approve a race's payout table (never its maker), then post
it, which posts every pending transfer it holds in one transaction and marks the race
paid; or reject it, which voids them and sends the race back to be settled again or
voided. Approvals count only while within their time to live and bound to the table."""

from __future__ import annotations

from uuid import UUID

from aggregates.base import CommandContext
from aggregates.payouts import RacePayout
from aggregates.races import Race
from services.eventlog import EventLog, UnitOfWork, Written
from services.ledger import post_pending
from services.races import reject_payout_in


def approve_payout(
    event_log: EventLog, context: CommandContext, payout_id: UUID, digest: str
) -> Written[str]:
    """Approve the table with this digest, as the acting admin. Answers the status."""

    def decide(unit: UnitOfWork) -> str:
        payout = unit.get(RacePayout, payout_id)
        payout.approve(context.actor, digest, context.occurred_at)
        return payout.status

    return event_log.execute(context, decide)


def post_payout(
    event_log: EventLog, context: CommandContext, payout_id: UUID, reason: str
) -> Written[str]:
    """With enough approvals in force: every pending transfer posts, the race is paid."""

    def decide(unit: UnitOfWork) -> str:
        payout = unit.get(RacePayout, payout_id)
        payout.post(context.occurred_at, reason)
        for transfer in payout.transfers:
            post_pending(unit, transfer)
        unit.get(Race, payout.race_id).mark_paid(reason)
        return payout.status

    return event_log.execute(context, decide)


def reject_payout(
    event_log: EventLog, context: CommandContext, payout_id: UUID, reason: str
) -> Written[str]:
    """Void every pending transfer; the race is official again (settle again, or void)."""

    def decide(unit: UnitOfWork) -> str:
        payout = unit.get(RacePayout, payout_id)
        payout.check_awaiting()  # only the race's latest payout can still be awaiting
        race = unit.get(Race, payout.race_id)
        reject_payout_in(unit, race, reason)
        race.reject_settlement(reason)
        return payout.status

    return event_log.execute(context, decide)
