"""Random deposits and fees: the trial balance stays zero, no user goes negative."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from uuid import UUID, uuid4

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.base import CommandContext
from aggregates.ledger import (
    AUDITION_REVENUE,
    TREASURY,
    InsufficientFundsError,
    user_account,
)
from services.bootstrap import Services
from services.ledger import post_transfer
from tests.support.projections import catch_up

CONTEXT = CommandContext(
    actor="test", occurred_at=datetime(2026, 11, 25, tzinfo=UTC), correlation_id="prop"
)
USERS = [UUID(int=n + 1) for n in range(3)]

moves = st.lists(
    st.tuples(
        st.sampled_from(["deposit", "fee", "duplicate"]),
        st.sampled_from(USERS),
        st.integers(min_value=1, max_value=50_000_000),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(moves=moves)
def test_random_moves_keep_the_books_balanced(
    services: Services, moves: list[tuple[str, UUID, int]]
) -> None:
    run = uuid4().hex
    last_cause = ""
    for kind, user, amount in moves:
        cause = last_cause if kind == "duplicate" and last_cause else f"{run}:{uuid4()}"
        debit, credit = (
            (TREASURY, user_account(user))
            if kind != "fee"
            else (user_account(user), AUDITION_REVENUE)
        )
        # A fee larger than the balance is refused; the property is that nothing breaks.
        with contextlib.suppress(InsufficientFundsError):
            services.event_log.execute(
                CONTEXT,
                lambda unit, c=cause, d=debit, k=credit, a=amount: post_transfer(unit, c, d, k, a),
            )
        last_cause = cause
    catch_up(services)

    with psycopg.connect(services.url) as conn:
        total = conn.execute("SELECT coalesce(sum(amount_minor), 0) FROM ledger_entries").fetchone()
        negative = conn.execute(
            "SELECT count(*) FROM ledger_balances WHERE account LIKE 'user:%' AND balance_minor < 0"
        ).fetchone()
        per_transfer = conn.execute(
            "SELECT count(*) FROM (SELECT transfer_id FROM ledger_entries GROUP BY transfer_id HAVING count(*) <> 2) t"
        ).fetchone()
    assert total == (0,)
    assert negative == (0,)
    assert per_transfer == (0,)


@pytest.mark.parametrize("amount", [0, -5])
def test_a_transfer_moves_a_positive_amount(services: Services, amount: int) -> None:
    from aggregates.ledger import InvalidAmountError

    with pytest.raises(InvalidAmountError):
        services.event_log.execute(
            CONTEXT, lambda unit: post_transfer(unit, "x", TREASURY, user_account(USERS[0]), amount)
        )
