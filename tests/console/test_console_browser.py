"""Issue 20, item 5, acceptance: the console in headless Chromium, through Playwright.

The app is served by uvicorn on loopback; the browser is the system's chromium (never a
downloaded one: `.ci/run` installs the package when it is missing). The page's wallet is
an injected EIP-1193 `window.ethereum` whose `personal_sign` is signed for real here, with
eth-account. The projections are driven by the test (`catch_up`, as the worker would), so
what the console must show next is decided by the test; the page learns it over its
Server-Sent Events stream.

An admin signs in, sees a projection stall live (its failing position and error), skips
it with a reason and sees it healthy again, sees a backtest job die and replays it: all
on one page, never reloaded (a marker set on `window` after sign-in is still there at the
end). A signed-in non-admin is refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account.signers.local import LocalAccount
from playwright.sync_api import Browser, Page, expect, sync_playwright

from aggregates.base import CommandContext
from api.app import create_app
from runtime.clock import FixedClock
from runtime.settings import Settings
from services import dead_letters
from services.bootstrap import Services
from tests.support.console import (
    CHROMIUM_ARGS,
    chromium,
    dead_backtest,
    inject_wallet,
    served,
    stall_audit_log,
)
from tests.support.projections import catch_up
from tests.support.wallets import new_wallet

SEEN_WITHIN_MS = 20_000
"""How long the page may take to show what must come (a bound, not a measured timing)."""


@pytest.fixture
def admin_wallet() -> LocalAccount:
    return new_wallet()


@pytest.fixture
def settings(settings: Settings, admin_wallet: LocalAccount) -> Settings:
    return settings.model_copy(update={"admin_addresses": [admin_wallet.address]})


@pytest.fixture
def base_url(services: Services, clock: FixedClock) -> Iterator[str]:
    with served(create_app(services=services, clock=clock)) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    executable = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def sign_in(browser: Browser, base_url: str, wallet: LocalAccount) -> Page:
    page = browser.new_context(base_url=base_url).new_page()
    inject_wallet(page, wallet)
    page.goto("/console")
    expect(page).to_have_url(f"{base_url}/console/sign-in")
    page.click("#sign-in")
    return page


def test_an_admin_skips_a_stall_and_replays_a_dead_letter_without_a_reload(
    browser: Browser,
    base_url: str,
    services: Services,
    context: CommandContext,
    clock: FixedClock,
    admin_wallet: LocalAccount,
) -> None:
    page = sign_in(browser, base_url, admin_wallet)
    expect(page).to_have_url(f"{base_url}/console", timeout=SEEN_WITHIN_MS)
    expect(page.locator("#signed-in-as")).to_have_text(admin_wallet.address)
    expect(page.locator("#live")).to_have_text("live", timeout=SEEN_WITHIN_MS)
    page.evaluate("window.consoleTestMarker = 'never reloaded'")
    audit_log = page.locator("#projection-audit_log")
    expect(audit_log).not_to_have_attribute("data-status", "stalled")

    # A handler bug stops the audit log on a real event; the page is told, not reloaded.
    position = stall_audit_log(services, context)
    expect(audit_log).to_have_attribute("data-status", "stalled", timeout=SEEN_WITHIN_MS)
    stall = page.locator("#stall-audit_log")
    expect(stall).to_contain_text(f"Stopped at position {position}")
    expect(stall).to_contain_text(f"handler bug on position {position}")

    stall.get_by_label("reason for audit_log").fill("known bad event, ticket 42")
    stall.get_by_role("button", name="Skip event").click()
    # The answer swaps the panel in place (a live refresh may follow it at once, so the
    # state is what is awaited, not the answer's notice).
    expect(audit_log).not_to_have_attribute("data-status", "stalled", timeout=SEEN_WITHIN_MS)
    expect(stall).to_have_count(0)
    catch_up(services)  # the worker's runner moves on past the skipped event
    expect(audit_log).to_have_attribute("data-status", "caught_up", timeout=SEEN_WITHIN_MS)
    assert [s["reason"] for s in services.projections.skips("audit_log")] == [
        "known bad event, ticket 42"
    ]

    # A backtest job dies; it shows up among the dead letters, and is replayed.
    job_id = dead_backtest(services, clock, "the engine is away")
    letter = page.locator(f"#letter-{job_id}")
    expect(letter).to_have_attribute("data-state", "dead", timeout=SEEN_WITHIN_MS)
    expect(letter).to_contain_text("the engine is away")
    letter.get_by_label(f"reason to replay {job_id}").fill("engine is back")
    letter.get_by_role("button", name="Replay").click()
    expect(letter).to_have_count(0, timeout=SEEN_WITHIN_MS)
    assert dead_letters.show_dead_letter(services, str(job_id)).state == "replayed"
    queued = dead_letters.queue_of(services).get(job_id)  # again, from its first attempt
    assert queued is not None and (queued.state, queued.attempts) == ("queued", 0)

    assert page.evaluate("window.consoleTestMarker") == "never reloaded"
    assert page.url == f"{base_url}/console"


def test_a_signed_in_non_admin_is_refused(browser: Browser, base_url: str) -> None:
    page = sign_in(browser, base_url, new_wallet())

    expect(page.locator("#refused")).to_contain_text("Not allowed", timeout=SEEN_WITHIN_MS)
    expect(page.locator("#refused")).to_contain_text("admin role")
    expect(page.locator("[data-panel]")).to_have_count(0)
