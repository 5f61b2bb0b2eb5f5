"""Rebuild the devchain's USDC from its Vyper source: `python -m scripts.devchain.build_contract`
writes contracts/USDC.json; `--check` only compares and exits 1 when the committed artifact
is not what the pinned compiler makes of the source, byte for byte.

The compiler is the `vyper` pinned in the dev extra: the artifact is committed, so running
a devchain needs no compiler, and the check says when the two have drifted apart."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CONTRACTS = Path(__file__).resolve().parent / "contracts"
SOURCE = CONTRACTS / "USDC.vy"
ARTIFACT = CONTRACTS / "USDC.json"
COMPILER_VERSION = "0.4.3"
# Written down rather than left to the compiler's default, which moves between releases.
EVM_VERSION = "prague"
OPTIMIZE = "gas"


class CompilerMismatchError(RuntimeError):
    """The installed vyper is not the pinned one: its output would not match byte for byte."""


def compile_artifact() -> dict[str, Any]:
    """The artifact as the pinned compiler makes it from the source in the repo."""
    import vyper
    from vyper.compiler.settings import OptimizationLevel, Settings

    if vyper.__version__ != COMPILER_VERSION:
        raise CompilerMismatchError(
            f"vyper {vyper.__version__} is installed; the artifact is built with {COMPILER_VERSION}"
        )
    source = SOURCE.read_text()
    settings = Settings(evm_version=EVM_VERSION, optimize=OptimizationLevel.from_string(OPTIMIZE))
    # A fixed contract path: the compiler may embed it, and it must not depend on the checkout.
    output = vyper.compile_code(
        source,
        contract_path="USDC.vy",
        output_formats=["abi", "bytecode", "bytecode_runtime"],
        settings=settings,
    )
    return {
        "contract_name": "USDC",
        "source": "USDC.vy",
        "compiler": {
            "name": "vyper",
            "version": COMPILER_VERSION,
            "evm_version": EVM_VERSION,
            "optimize": OPTIMIZE,
        },
        "abi": output["abi"],
        "bytecode": output["bytecode"],
        "bytecode_runtime": output["bytecode_runtime"],
    }


def render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def committed() -> dict[str, Any]:
    artifact: dict[str, Any] = json.loads(ARTIFACT.read_text())
    return artifact


def main(argv: list[str]) -> int:
    fresh = render(compile_artifact())
    if "--check" in argv:
        if ARTIFACT.exists() and ARTIFACT.read_text() == fresh:
            print(f"{ARTIFACT.name} matches a rebuild of {SOURCE.name}")
            return 0
        print(f"{ARTIFACT.name} differs from a rebuild of {SOURCE.name}", file=sys.stderr)
        return 1
    ARTIFACT.write_text(fresh)
    print(f"wrote {ARTIFACT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
