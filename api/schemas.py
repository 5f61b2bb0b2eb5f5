"""Types every router shares."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, StringConstraints

from aggregates.clones import FREE_TEXT, ONE_LINE

Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=FREE_TEXT)
]
"""Why an admin did something. Control characters are refused: a NUL would be kept in the
event and then stop every read model that writes it to a text column."""

SearchText = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=ONE_LINE)]
"""A filter value matched against stored text."""


class WrittenPublic(BaseModel):
    """A command's answer when it has nothing else to say: the log position it wrote."""

    position: int
