"""The alert rules (ops/prometheus/alerts.yml): their shape and runbook sections, checked in
Python so something always runs, then `promtool check rules` and `promtool test rules`
(alerts.test.yml: a case per alert), which skip loudly only when promtool is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "ops" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
RULE_TESTS = RULES_DIR / "alerts.test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
SECTION_PARTS = ("**What it means.**", "**How to check.**", "**What to do.**")
SEVERITIES = {"critical", "warning"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerts() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def runbook_sections() -> dict[str, str]:
    """Alert name -> its section's text (a `### Name` heading to the next heading)."""
    text = RUNBOOK.read_text()
    parts = re.split(r"^(#{2,3} .+)$", text, flags=re.MULTILINE)
    sections: dict[str, str] = {}
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        if heading.startswith("### "):
            sections[heading.removeprefix("### ").strip()] = body
    return sections


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading made of one word."""
    return re.sub(r"[^a-z0-9_-]", "", heading.lower())


def promtool() -> str:
    found = shutil.which("promtool") or str(Path(sys.executable).with_name("promtool"))
    if not Path(found).is_file():
        message = (
            "PROMTOOL IS NOT INSTALLED: the alert rules were NOT tested with `promtool test"
            " rules`. `make test` (or `make ops`) installs it with ops/install-promtool.sh,"
            " from Debian's prometheus package; see that script's message for why it could not."
        )
        warnings.warn(message, stacklevel=2)
        pytest.skip(message)
    return found


# --- the shape, in Python ------------------------------------------------------------------


def test_every_alert_is_named_once_with_a_severity_summary_and_description() -> None:
    rules = alerts()
    names = [rule["alert"] for rule in rules]

    assert len(names) >= 16
    assert len(set(names)) == len(names), "alert names are unique"
    for rule in rules:
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]), rule["alert"]
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule


def test_every_alert_links_its_own_runbook_section_and_every_section_has_an_alert() -> None:
    sections = runbook_sections()
    names = {rule["alert"] for rule in alerts()}

    for rule in alerts():
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{anchor(rule['alert'])}"
        body = sections.get(rule["alert"])
        assert body is not None, f"docs/runbook.md has no section ### {rule['alert']}"
        for part in SECTION_PARTS:
            assert part in body, f"{rule['alert']}'s runbook section lacks {part}"
    assert set(sections) == names, "a runbook section for an alert that does not exist"


def test_the_issue_asks_for_these_signals_and_the_rules_read_them() -> None:
    expressions = " ".join(rule["expr"] for rule in alerts())

    for series in (
        "pumpparty_http_request_duration_seconds_count",
        "pumpparty_http_request_duration_seconds_bucket",
        "pumpparty_projection_lag_events",
        "pumpparty_projection_stalled",
        "pumpparty_worker_heartbeat_age_seconds",
        "pumpparty_dead_letters",
        "pumpparty_reconciliation_breaches",
        "pumpparty_backup_last_verified_timestamp_seconds",
        "pumpparty_ingest_status",
        "pg_up",
        "pg_stat_activity_count",
        "pg_settings_max_connections",
    ):
        assert series in expressions, series
    assert "26 * 3600" in expressions, "backup not verified in 26 h"


def test_every_alert_has_a_promtool_case_where_it_fires_and_one_where_it_does_not() -> None:
    cases = load(RULE_TESTS)
    assert cases["rule_files"] == [RULES.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in cases["tests"]:
        assert case["input_series"], case["name"]
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])

    names = {rule["alert"] for rule in alerts()}
    assert names - fires == set(), "alerts with no case that fires"
    assert names - quiet == set(), "alerts with no case that stays quiet or pending"


# --- promtool ------------------------------------------------------------------------------


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=240, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", RULES.name, cwd=RULES_DIR)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_test_rules_passes_a_case_per_alert() -> None:
    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=RULES_DIR)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_fails_when_a_rule_drifts_from_its_case(tmp_path: Path) -> None:
    rules = RULES.read_text()
    assert "> 0.05" in rules
    (tmp_path / RULES.name).write_text(rules.replace("> 0.05", "> 0.5", 1))
    cases = load(RULE_TESTS)
    cases["tests"] = [case for case in cases["tests"] if case["name"].startswith("ApiErrorRate")]
    (tmp_path / RULE_TESTS.name).write_text(yaml.safe_dump(cases))

    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "FAILED" in output and "ApiErrorRateHigh" in output
