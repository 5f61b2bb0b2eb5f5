"""What the cadence driver trades, read from other read models' tables (no tables of its
own): running auditions' current accounts with their pinned version (`auditions`), running
races' entrant accounts (`races`, `race_entrants`; the entrant's version is the race's
`Scheduled` event's, so the driver reads it from the race), and a published version's graph
(`clone_versions`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.postgres import PostgresDatastore


@dataclass(frozen=True, slots=True)
class TradedAccount:
    account_id: UUID
    clone_id: UUID
    kind: str
    """`audition` or `race`."""
    version_hash: str | None
    """The audition's pinned version; None for a race entrant (read from the race)."""
    race_id: UUID | None


def accounts_to_trade(datastore: PostgresDatastore, limit: int) -> list[TradedAccount]:
    """Running audition accounts and running race accounts, at most `limit`, in a stable
    order (the account id), so a round's share of a large roster is deterministic."""
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(
            "SELECT prop_account_id AS account_id, clone_id, 'audition' AS kind, version_hash,"
            " NULL::uuid AS race_id FROM auditions"
            " WHERE status = 'running' AND prop_account_id IS NOT NULL"
            " UNION ALL"
            " SELECT e.prop_account_id, e.clone_id, 'race', NULL, e.race_id"
            " FROM race_entrants e JOIN races r USING (race_id)"
            " WHERE r.status = 'running' AND e.prop_account_id IS NOT NULL"
            " ORDER BY account_id LIMIT %s",
            (limit,),
        )
        return [TradedAccount(**row) for row in cursor.fetchall()]


def published_graph(
    datastore: PostgresDatastore, clone_id: UUID, version_hash: str
) -> dict[str, Any] | None:
    """The published version's canonical graph, or None if the clone has no such version."""
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(
            "SELECT graph FROM clone_versions WHERE clone_id = %s AND version_id = %s",
            (clone_id, version_hash),
        )
        row = cursor.fetchone()
        return dict(row["graph"]) if row else None
