"""The list parameters every list route takes: `?cursor=&limit=`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from projections.paging import Page, decode_cursor


async def page_params(
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page:
    return Page(after=decode_cursor(cursor) if cursor else None, limit=limit)


PageDep = Annotated[Page, Depends(page_params)]
