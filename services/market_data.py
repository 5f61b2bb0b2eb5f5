"""Which candle intervals the market-data store holds for a strategy, and the check that a
graph's cadence is one of them.

The cadence driver, dry runs and backtests read a graph's bars at its `cadence`; a cadence
of which no candle is ever stored would be tallied `market-data-missing` round after round
and the owner would never learn why. So publishing a version, and a dry run or backtest at
the graph's cadence, refuse it at once (`cadence-not-ingested`, naming those held). Held
are: the interval ingestion stores (`PUMPPARTY_INGEST_CANDLE_INTERVAL`, also the default
of a graph that declares no cadence), and any other interval of which candles of the
graph's asset closed within `HELD_WITHIN` (another ingestion process, a backfill).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.postgres import PostgresDatastore

from aggregates.errors import InvalidCommandError
from aggregates.strategy_executor import CANDLE_SOURCE
from aggregates.strategy_graph import ActionNode, Cadence, StrategyGraph
from runtime.settings import Settings

INTERVALS: tuple[Cadence, ...] = ("1m", "5m", "15m", "1h")
HELD_WITHIN = timedelta(days=1)
"""Candles older than this say nothing about what is stored now: an ingestion since
stopped or reconfigured."""


class CadenceNotIngestedError(InvalidCommandError):
    """The graph's cadence is an interval the market-data store does not hold (422)."""

    code = "cadence-not-ingested"

    def __init__(self, cadence: str, available: list[str]) -> None:
        self.cadence = cadence
        self.available = available
        detail = (
            f"no {cadence} candles are stored, so a graph at cadence {cadence} could never"
            f" trade; the cadences available are {', '.join(available)}"
        )
        self.problem_errors = [
            {"rule": self.code, "pointer": "/cadence", "detail": detail, "available": available}
        ]
        super().__init__(detail)


@dataclass(frozen=True)
class MarketIntervals:
    """The store's candle intervals as the edge configured them."""

    datastore: PostgresDatastore
    ingested: Cadence
    """The interval ingestion stores: always held, and the default cadence."""

    @classmethod
    def of(cls, datastore: PostgresDatastore, settings: Settings) -> MarketIntervals:
        return cls(datastore, settings.ingest_candle_interval)

    def held(self, asset: str, now: datetime) -> list[str]:
        """The intervals held for `asset`, shortest first."""
        others = [i for i in INTERVALS if i != self.ingested]
        # One probe of the candles' primary key per interval; never a scan of the table.
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                "SELECT i FROM unnest(%s::text[]) AS i WHERE EXISTS (SELECT 1 FROM"
                " market_candles c WHERE c.source = %s AND c.instrument = %s"
                " AND c.interval = i AND c.open_time >= %s)",
                (others, CANDLE_SOURCE, asset, now - HELD_WITHIN),
            )
            found = {str(row["i"]) for row in cursor.fetchall()}
        return [i for i in INTERVALS if i == self.ingested or i in found]

    def check(self, graph: StrategyGraph | Mapping[str, Any], now: datetime) -> None:
        """Refuse a graph whose declared cadence is not held for its asset."""
        cadence, asset = _cadence_and_asset(graph)
        if cadence is None or cadence == self.ingested:
            return
        held: list[str] = self.held(asset, now) if asset is not None else [self.ingested]
        if cadence not in held:
            raise CadenceNotIngestedError(cadence, held)

    def interval_for(
        self, graph: StrategyGraph | Mapping[str, Any], asked: Cadence | None, now: datetime
    ) -> Cadence:
        """The bars a dry run or backtest of `graph` reads: the interval asked, else the
        graph's cadence (refused when not held), else the ingested interval: the bars the
        cadence driver would trade it on."""
        if asked is not None:
            return asked  # asked outright: a missing window is `market-data-missing`
        self.check(graph, now)
        return _cadence_and_asset(graph)[0] or self.ingested


def _cadence_and_asset(
    graph: StrategyGraph | Mapping[str, Any],
) -> tuple[Cadence | None, str | None]:
    """The declared cadence and the traded asset. A stored document is read as it stands,
    not parsed: one that no longer passes today's rules is refused by those, by name."""
    if isinstance(graph, StrategyGraph):
        action = next((n for n in graph.nodes if isinstance(n, ActionNode)), None)
        return graph.cadence, action.asset if action is not None else None
    cadence = next((i for i in INTERVALS if i == graph.get("cadence")), None)
    nodes = graph.get("nodes")
    asset = next(
        (
            n["asset"]
            for n in (nodes if isinstance(nodes, list) else [])
            if isinstance(n, dict) and n.get("kind") == "action" and isinstance(n.get("asset"), str)
        ),
        None,
    )
    return cadence, asset
