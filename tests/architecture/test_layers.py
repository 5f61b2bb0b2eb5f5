"""The house's shape, checked: imports point down only, the domain does no I/O, routers run
no SQL, and every test folder is reached by a `make` target."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["runtime", "aggregates", "projections", "ingest", "services", "api", "scripts"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=where, capture_output=True, text=True, timeout=120
    )


def test_the_layer_contracts_hold() -> None:
    result = lint_imports(ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def copy_of_the_house(where: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, where / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", where / "pyproject.toml")
    return where


def test_an_aggregate_that_imports_psycopg_breaks_the_contract(tmp_path: Path) -> None:
    copy_of_the_house(tmp_path)
    ledger = tmp_path / "aggregates" / "ledger.py"
    ledger.write_text(ledger.read_text() + "\nimport psycopg  # noqa\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0
    assert "aggregates.ledger -> psycopg" in result.stdout


def test_an_aggregate_that_imports_a_higher_layer_breaks_the_contract(tmp_path: Path) -> None:
    copy_of_the_house(tmp_path)
    users = tmp_path / "aggregates" / "users.py"
    users.write_text(users.read_text() + "\nimport projections.users  # noqa\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0
    assert "aggregates is not allowed to import projections" in result.stdout


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_domain_takes_only_the_domain_part_of_the_event_sourcing_library() -> None:
    # import-linter cannot forbid part of an outside package, so this one is checked here.
    used = {
        (path.name, name)
        for path in (ROOT / "aggregates").glob("*.py")
        for name in imported_modules(path)
        if name.startswith("eventsourcing")
    }

    assert used, "the domain is built on eventsourcing.domain"
    assert {name for _, name in used} == {"eventsourcing.domain"}, used


def test_no_router_runs_sql() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "api").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "execute(" in line
    ]

    assert offenders == []


def test_every_test_folder_is_reached_by_a_make_target() -> None:
    layer_rule = re.search(
        r"^([a-z ]+): \$\(STAMP\)\n\t\$\(BIN\)/python -m pytest tests/\$@",
        (ROOT / "Makefile").read_text(),
        re.MULTILINE,
    )
    folders = {
        path.name
        for path in (ROOT / "tests").iterdir()
        if path.is_dir() and any(path.glob("test_*.py"))
    }

    assert layer_rule is not None
    assert folders - set(layer_rule.group(1).split()) == set()
