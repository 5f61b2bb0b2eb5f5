"""Two-phase transfers on the store: a reservation guards the available balance under
concurrency, and a pending transfer resolves exactly once when a post and a void race."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID, uuid4

from aggregates.errors import ConflictError
from aggregates.ledger import TREASURY, UserAccount, user_account, user_account_id
from runtime.clock import FixedClock
from services.bootstrap import Services
from services.eventlog import UnitOfWork
from services.ledger import post_pending, post_transfer, reserve_transfer, void_pending
from tests.support.auditions import context_at
from tests.support.projections import catch_up

T = TypeVar("T")
USER = UUID("0f0e0d0c-0b0a-4908-8706-050403020100")


def execute(services: Services, clock: FixedClock, decide: Callable[[UnitOfWork], T]) -> T:
    return services.event_log.execute(context_at(clock()), decide).result


def funded(services: Services, clock: FixedClock, amount: int) -> None:
    execute(
        services,
        clock,
        lambda unit: post_transfer(unit, f"fund:{uuid4()}", TREASURY, user_account(USER), amount),
    )


def account(services: Services) -> UserAccount:
    found = services.event_log.read(UserAccount, user_account_id(USER))
    assert found is not None
    return found


def race(*actions: Callable[[], object]) -> list[object]:
    """Run the actions at once; each answers its result or the conflict it raised."""
    barrier = threading.Barrier(len(actions))
    results: list[object] = []

    def run(action: Callable[[], object]) -> None:
        barrier.wait()
        try:
            results.append(action())
        except ConflictError as refused:
            results.append(refused)

    threads = [threading.Thread(target=run, args=(a,)) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_reservations_never_hold_more_than_is_available(
    services: Services, clock: FixedClock
) -> None:
    funded(services, clock, 10)

    def hold(n: int) -> Callable[[], UUID]:
        return lambda: execute(
            services,
            clock,
            lambda unit: reserve_transfer(
                unit, f"hold:{n}", user_account(USER), "treasury:outgoing", 3
            ),
        )

    results = race(*(hold(n) for n in range(8)))

    held = [r for r in results if isinstance(r, UUID)]
    assert len(held) == 3  # 3 x 3 of 10
    assert (account(services).reserved_minor, account(services).available_minor) == (9, 1)


def test_a_post_and_a_void_racing_resolve_the_transfer_once(
    services: Services, clock: FixedClock
) -> None:
    funded(services, clock, 10)
    held = execute(
        services,
        clock,
        lambda unit: reserve_transfer(unit, "hold", user_account(USER), "treasury:outgoing", 4),
    )

    def resolve(step: str) -> Callable[[], str]:
        def decide(unit: UnitOfWork) -> str:
            if step == "post":
                post_pending(unit, held)
            else:
                void_pending(unit, held, "cancelled")
            return step

        return lambda: execute(services, clock, decide)

    results = race(resolve("post"), resolve("void"))

    done = [r for r in results if isinstance(r, str)]
    assert len(done) == 1 and len(results) == 2
    balance = account(services)
    expected = (6, 0) if done == ["post"] else (10, 0)
    assert (balance.balance_minor, balance.reserved_minor) == expected
    catch_up(services)
