"""The figures as a terminal table (rich) and as the markdown table in RESULTS.md."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.harness import Figure

BEGIN = "<!-- bench:begin (written by `make bench`; edit outside these markers) -->"
END = "<!-- bench:end -->"


def marker(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "-"}[passed]


def print_table(console: Console, figures: list[Figure], title: str) -> None:
    table = Table(title=title, show_lines=False)
    table.add_column("Benchmark")
    table.add_column("Code")
    table.add_column("Figure", justify="right")
    table.add_column("Measured")
    table.add_column("Target")
    table.add_column("", justify="center")
    for figure in figures:
        style = {True: "green", False: "bold red", None: "dim"}[figure.passed]
        table.add_row(
            figure.name,
            figure.code,
            figure.shown,
            figure.detail,
            figure.target,
            f"[{style}]{marker(figure.passed)}[/{style}]",
        )
    console.print(table)


def markdown(figures: list[Figure], heading: list[str]) -> str:
    lines = [
        *heading,
        "",
        "| Benchmark | Code | Figure | Measured | Target | Result |",
        "|---|---|---:|---|---|:-:|",
    ]
    for figure in figures:
        cells = [
            figure.name,
            figure.code,
            figure.shown,
            figure.detail,
            figure.target,
            marker(figure.passed),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def write_results(path: Path, body: str, template: str) -> None:
    """Replace the measured block in RESULTS.md, keeping the hand-written text around it."""
    block = f"{BEGIN}\n{body}\n{END}"
    text = path.read_text() if path.exists() else template
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
