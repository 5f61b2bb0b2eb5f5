"""Every read model the service keeps, by name."""

from __future__ import annotations

from typing import Any

from projections.arena import ArenaReadModel
from projections.audit_log import AuditLog
from projections.audition_queue import AuditionQueue
from projections.auditions import Auditions
from projections.base import ReadModel
from projections.clones import Clones
from projections.deposits import Deposits
from projections.entitlements import Entitlements
from projections.generations import Generations
from projections.ledger import LedgerEntries
from projections.moderation_queue import ModerationQueue
from projections.payouts import Payouts
from projections.prop_accounts import PropAccounts
from projections.prop_equity import PropEquity
from projections.prop_fills import PropFills
from projections.public_profiles import PublicProfiles
from projections.purchases import Purchases
from projections.races import Races
from projections.sessions import Sessions
from projections.users import Users
from projections.withdrawals import Withdrawals

PROJECTIONS: list[type[ReadModel[Any]]] = [
    AuditLog,
    Users,
    Sessions,
    Purchases,
    Deposits,
    Entitlements,
    LedgerEntries,
    Clones,
    Generations,
    PublicProfiles,
    ModerationQueue,
    PropAccounts,
    PropFills,
    PropEquity,
    Auditions,
    AuditionQueue,
    ArenaReadModel,
    Races,
    Payouts,
    Withdrawals,
]
