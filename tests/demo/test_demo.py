"""`pumpparty demo` (issue 21): the whole story runs to the end on a fresh database, against
the devchain and the demo service it starts, and its final checks hold: the log's hash chain
verifies, every reconciliation monitor agrees, the spectators' balances add up with the
race's settlement, and the winner's withdrawal arrived on the devchain. Told a second time
against the same service, as `pumpparty demo --url` does (from the environment `--serve`
writes, reaching the devchain over its JSON-RPC), it works again with fresh demo ids."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest
from eventsourcing.utils import resolve_topic
from rich.console import Console

from runtime.settings import load_settings
from scripts.demo import (
    SPECTATOR_DEPOSITS,
    Outcome,
    client_environment,
    started_platform,
    story_against,
    succeeded,
    tell_story,
    write_client_environment,
)
from scripts.legacy_demo import DemoTab

STAKES_MINOR = 15_000_000  # each spectator backs one entrant with 10 USDC and the next with 5


def assert_story_held(outcome: Outcome) -> None:
    passed = [c for c in outcome.creators if c.status == "passed"]
    assert len(passed) >= 2, [(c.person.role, c.status, c.total_return) for c in outcome.creators]
    assert all(c.backtest and c.version_id and c.audition_id for c in outcome.creators)

    race = outcome.race
    assert race["status"] == "settled"
    assert {e["clone_id"] for e in race["entrants"]} == {c.clone_id for c in passed}
    assert sorted(e["place"] for e in race["entrants"]) == list(range(1, len(passed) + 1))
    settlement = race["settlement"]
    gross = int(settlement["gross_minor"])
    assert gross == len(SPECTATOR_DEPOSITS) * STAKES_MINOR
    assert gross == int(settlement["takeout_minor"]) + int(settlement["paid_minor"]) + int(
        settlement["breakage_minor"]
    ) - int(settlement["subsidy_minor"])

    # Deposits - stakes + payouts, less what the winner took out to the chain.
    held = sum(outcome.balances.values()) + outcome.withdrawn_minor
    assert held == sum(SPECTATOR_DEPOSITS) - gross + int(settlement["paid_minor"])
    assert outcome.withdrawn_minor > 0
    assert outcome.withdrawal["status"] == "posted"
    assert outcome.withdrawal["tx_status"] == "verified"
    assert outcome.chain_after_minor - outcome.chain_before_minor == outcome.withdrawn_minor

    assert outcome.audit_ok, outcome.audit
    assert outcome.reconciliation is not None
    assert outcome.reconciliation.breaches == []
    assert outcome.reconciliation.trial_balance_minor == 0
    assert succeeded(outcome)


def test_the_demo_runs_to_the_end_twice_on_a_fresh_database(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    told = io.StringIO()
    console = Console(file=told, width=160)
    with started_platform(data_dir=tmp_path, database_url=database_url) as platform:
        first = tell_story(platform, console)
        assert_story_held(first)

        # Another process, given the environment `pumpparty demo --serve` writes.
        environment = write_client_environment(platform)
        assert environment.stat().st_mode & 0o777 == 0o600
        written = dict(
            shlex.split(line)[1].split("=", 1) for line in environment.read_text().splitlines()
        )
        assert written == client_environment(platform)
        for name, value in written.items():
            monkeypatch.setenv(name, value)
        second = story_against(platform.url, load_settings(), console)
        assert_story_held(second)

    assert first.run != second.run
    assert first.race["race_id"] != second.race["race_id"]
    assert {c.clone_id for c in first.creators}.isdisjoint(c.clone_id for c in second.creators)
    story = told.getvalue()
    assert story.count("$ pumpparty audit verify\nok: ") == 2
    assert story.count("ok: every monitor agrees") == 2
    assert "paid the 25.000000 USDC audition fee on the devchain (verified)" in story


def test_old_logs_demo_tab_events_still_resolve() -> None:
    # What the former demo wrote names its classes in scripts.cli.
    assert resolve_topic("scripts.cli:DemoTab") is DemoTab
    for name in ("Opened", "ItemAdded"):
        event_class = resolve_topic(f"scripts.cli:DemoTab.{name}")
        assert event_class is vars(DemoTab)[name]
        assert issubclass(event_class, DemoTab.Event)
