"""Pages of a list: opaque cursors (the client hands back what it was given, nothing more),
and the cut of a fetched page into its rows and the next cursor."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import orjson
from pydantic import BaseModel

from aggregates.errors import InvalidCommandError

T = TypeVar("T")
R = TypeVar("R")


class InvalidCursorError(InvalidCommandError):
    code = "invalid-cursor"


def encode_cursor(after: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(after)).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidCursorError("the cursor is not one this service gave out") from None
    if not isinstance(decoded, dict):
        raise InvalidCursorError("the cursor is not one this service gave out")
    return decoded


class Page(BaseModel):
    after: dict[str, Any] | None
    limit: int

    def position(self, key: str = "position") -> int:
        """The whole number a cursor continues after (0 from the start)."""
        value = (self.after or {}).get(key, 0)
        if type(value) is not int or not 0 <= value < 2**63:
            raise InvalidCursorError("the cursor is not one this service gave out")
        return value

    @property
    def fetch(self) -> int:
        """How many rows to ask for: one more than the page, to know if another follows."""
        return self.limit + 1

    def cut(self, rows: Sequence[R], *keys: str) -> tuple[list[R], str | None]:
        """This page's rows (of `fetch` asked for) and the cursor after its last row."""
        items = list(rows[: self.limit])
        if len(rows) <= self.limit:
            return items, None
        last = items[-1]
        return items, encode_cursor({key: _cursor_value(_field(last, key)) for key in keys})

    def moment(self, key: str) -> datetime | None:
        return self._parsed(key, datetime.fromisoformat)

    def identifier(self, key: str) -> UUID | None:
        return self._parsed(key, UUID)

    def _parsed(self, key: str, parse: Callable[[str], T]) -> T | None:
        if not self.after:
            return None
        value = self.after.get(key)
        if not isinstance(value, str):
            raise InvalidCursorError("the cursor is not one this service gave out")
        try:
            return parse(value)
        except ValueError:
            raise InvalidCursorError("the cursor is not one this service gave out") from None


def _cursor_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def _field(row: Any, key: str) -> Any:
    return row[key] if isinstance(row, Mapping) else getattr(row, key)
