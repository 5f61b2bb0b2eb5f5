"""Opaque cursors for lists: the client hands back what it was given, nothing more."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

import orjson
from fastapi import Depends, Query
from pydantic import BaseModel

from aggregates.errors import InvalidCommandError

T = TypeVar("T")


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


def page_params(
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page:
    return Page(after=decode_cursor(cursor) if cursor else None, limit=limit)


PageDep = Annotated[Page, Depends(page_params)]
