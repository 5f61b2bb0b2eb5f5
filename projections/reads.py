"""What read-your-writes waits on: how far each projection has read the log, over the
process's async read pool (`runtime.reads`). Query functions live beside their projection
(its tables, handlers and queries side by side), take a `ProjectionReads` and return frozen
dataclass rows selected with `columns(Row)`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from psycopg.sql import SQL, Identifier

from runtime.reads import Reads, columns
from runtime.schema import EVENTS_TABLE, LOG_NAME

__all__ = ["ProjectionReads", "columns"]

POLL_SECONDS = 0.02
"""How often a waiting read looks at a projection's position again."""


class ProjectionReads(Reads):
    """The read pool, and the positions of the projections whose tables it reads."""

    # --- positions: what read-your-writes waits on ---------------------------------------

    async def head(self) -> int:
        row = await self.one(
            _Position,
            SQL("SELECT max(notification_id) AS position FROM {}").format(Identifier(EVENTS_TABLE)),
            (),
        )
        return (row.position or 0) if row else 0

    async def position(self, projection: str) -> int:
        """How far `projection`'s live generation has read the log."""
        state = await self.one(
            _Generation, "SELECT generation FROM projection_state WHERE name = %s", (projection,)
        )
        if state is None:
            return 0
        tracking = Identifier(f"{projection}__g{state.generation}_tracking")
        row = await self.one(
            _Position,
            SQL(
                "SELECT max(notification_id) AS position FROM {} WHERE application_name = %s"
            ).format(tracking),
            (LOG_NAME,),
        )
        return (row.position or 0) if row else 0

    async def wait_until(self, projection: str, position: int, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until `projection` has read up to `position`."""
        deadline = time.monotonic() + timeout
        while await self.position(projection) < position:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True


@dataclass(frozen=True, slots=True)
class _Position:
    position: int | None


@dataclass(frozen=True, slots=True)
class _Generation:
    generation: int
