"""The mutation score per module, from what `mutmut run` left in mutants/ (`make mutate`).

mutmut keeps one `<module>.py.meta` file per mutated module, mapping each mutant to the
exit code of its test run; it prints only one total. This reads those files and prints,
per module, how many mutants the tests killed, how many survived, how many no test
reached, and the score: killed (a timeout counts as killed) over all mutants checked.

    python -m scripts.mutation_report [--mutants mutants] [--survivors] [--min-score 90]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

# The same reading of exit codes as mutmut's own (mutmut/stats.py).
STATUS_BY_EXIT_CODE: dict[int | None, str] = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    37: "caught by type check",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    None: "not checked",
}
KILLED = {"killed", "timeout", "caught by type check"}
UNCHECKED = {"skipped", "not checked"}


def status(exit_code: int | None) -> str:
    return STATUS_BY_EXIT_CODE.get(exit_code, "suspicious")


def module_name(meta: Path, mutants: Path) -> str:
    return str(meta.relative_to(mutants)).removesuffix(".py.meta").replace("/", ".")


def read(mutants: Path) -> dict[str, dict[str, str]]:
    """Module -> mutant name -> status."""
    found: dict[str, dict[str, str]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        found[module_name(meta, mutants)] = {name: status(code) for name, code in codes.items()}
    return found


def score(statuses: Counter[str]) -> float | None:
    checked = sum(n for s, n in statuses.items() if s not in UNCHECKED)
    killed = sum(n for s, n in statuses.items() if s in KILLED)
    return None if checked == 0 else 100 * killed / checked


def table(modules: dict[str, dict[str, str]]) -> tuple[list[str], float | None]:
    lines = [f"{'module':<30} {'mutants':>7} {'killed':>7} {'survived':>8} {'no test':>7} score"]
    total: Counter[str] = Counter()
    for name, mutants in modules.items():
        statuses = Counter(mutants.values())
        total.update(statuses)
        lines.append(_row(name, statuses))
    lines.append(_row("all", total))
    return lines, score(total)


def _row(name: str, statuses: Counter[str]) -> str:
    value = score(statuses)
    shown = "-" if value is None else f"{value:5.1f}%"
    killed = sum(n for s, n in statuses.items() if s in KILLED)
    return (
        f"{name:<30} {statuses.total():>7} {killed:>7} {statuses['survived']:>8}"
        f" {statuses['no tests']:>7} {shown}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    parser.add_argument(
        "--min-score", type=float, default=None, help="exit 1 when the total is lower"
    )
    args = parser.parse_args(argv)
    modules = read(args.mutants)
    if not modules:
        print(f"no mutation results under {args.mutants}/: run `make mutate` first")
        return 2
    lines, total = table(modules)
    print("\n".join(lines))
    if args.survivors:
        for mutants in modules.values():
            for mutant, state in mutants.items():
                if state not in KILLED and state not in UNCHECKED:
                    print(f"{mutant}  # {state}; see `mutmut show {mutant}`")
    if args.min_score is not None and (total is None or total < args.min_score):
        print(f"the score is below {args.min_score}%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
