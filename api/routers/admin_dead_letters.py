"""Admins see and decide about dead letters: background work of every kind (backtests,
scheduled jobs' rounds, payment checks, stalled projections) that ran out of retries
(`services/dead_letters.py`). Replay and discard are events with the admin as actor and
the reason given; a discard needs a reason, and a discarded letter never runs again."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, ConfigDict, StringConstraints
from starlette.concurrency import run_in_threadpool

from api.auth import AdminUser
from api.commands import AdminCommand
from api.deps import ServicesDep
from api.pagination import PageDep
from api.routing import APIRouter
from api.schemas import Reason
from projections.paging import InvalidCursorError, encode_cursor
from services import dead_letters
from services.dead_letters import DeadLetterView

router = APIRouter(prefix="/v1/admin/dead-letters", tags=["admin"])

Kind = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[a-z0-9_.:-]+$")]
LetterId = Annotated[str, StringConstraints(max_length=200)]


class DeadLetterPublic(BaseModel):
    id: str
    kind: str
    subject: str | None
    error: str | None
    attempts: int
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    state: str


class DeadLettersPublic(BaseModel):
    items: list[DeadLetterPublic]
    next_cursor: str | None


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


def public(view: DeadLetterView) -> DeadLetterPublic:
    return DeadLetterPublic.model_validate(view, from_attributes=True)


@router.get("", operation_id="admin_dead_letters_list")
async def list_letters(
    admin: AdminUser,
    services: ServicesDep,
    page: PageDep,
    kind: Annotated[Kind | None, Query()] = None,
    include_closed: Annotated[
        bool, Query(description="discarded and replayed letters too")
    ] = False,
) -> DeadLettersPublic:
    """Dead letters, the latest failure first, narrowed by `kind` (`backtest`,
    `scheduled.<job>`, `deposit_verification`, `projection.<name>`...)."""
    after = None
    if page.after is not None:
        at, letter_id = page.moment("at"), page.after.get("id")
        if at is None or at.tzinfo is None or not isinstance(letter_id, str):
            raise InvalidCursorError("the cursor is not one this service gave out")
        after = (at, letter_id)
    views = await run_in_threadpool(
        lambda: dead_letters.list_dead_letters(
            services, kind=kind, include_closed=include_closed, limit=page.fetch, after=after
        )
    )
    items = views[: page.limit]
    next_cursor = None
    if len(views) > page.limit:
        at, letter_id = dead_letters.page_key(items[-1])
        next_cursor = encode_cursor({"at": at.isoformat(), "id": letter_id})
    return DeadLettersPublic(items=[public(view) for view in items], next_cursor=next_cursor)


@router.get("/{letter_id}", operation_id="admin_dead_letter_get")
async def get_letter(
    letter_id: LetterId, admin: AdminUser, services: ServicesDep
) -> DeadLetterPublic:
    """One dead letter (404 `dead-letter-not-found`): error, attempts, first and last
    failure."""
    view = await run_in_threadpool(lambda: dead_letters.show_dead_letter(services, letter_id))
    return public(view)


@router.post("/{letter_id}/replay", operation_id="admin_dead_letter_replay")
def replay(
    letter_id: LetterId, body: DecisionCreate, admin: AdminCommand, services: ServicesDep
) -> DeadLetterPublic:
    """Run the dead work again (a job from its first attempt; a projection retries the
    event it stalled on). 409 `dead-letter-discarded` for a discarded letter, 409
    `job-not-dead` for work that is not dead."""
    view = dead_letters.replay_dead_letter(services, admin.context, letter_id, body.reason)
    return public(view)


@router.post("/{letter_id}/discard", operation_id="admin_dead_letter_discard")
def discard(
    letter_id: LetterId, body: DecisionCreate, admin: AdminCommand, services: ServicesDep
) -> DeadLetterPublic:
    """Give the dead work up for good, with a reason (422 without one): a job never runs
    again; a projection skips the event it stalled on."""
    view = dead_letters.discard_dead_letter(services, admin.context, letter_id, body.reason)
    return public(view)
