"""`pumpparty devchain`: serves until interrupted and prints what a service needs;
`mine` and `reorg` act on a running devchain over its JSON-RPC."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from scripts.cli import app
from scripts.devchain import USDC_ADDRESS, DevChain
from scripts.devchain.wallets import demo_wallet

ROOT = Path(__file__).resolve().parents[2]


def test_mine_and_reorg_act_on_a_running_devchain(chain: DevChain) -> None:
    runner = CliRunner()
    head = chain.head()

    mined = runner.invoke(app, ["devchain", "mine", "3", "--url", chain.url])
    hash_before = chain.rpc("eth_getBlockByNumber", [hex(head + 3), False])["hash"]
    reorged = runner.invoke(app, ["devchain", "reorg", "2", "--url", chain.url])
    too_deep = runner.invoke(app, ["devchain", "reorg", str(head + 3), "--url", chain.url])

    assert mined.exit_code == 0, mined.output
    assert f"head block {head + 3}" in mined.output
    assert reorged.exit_code == 0, reorged.output
    assert chain.head() == head + 3
    assert chain.rpc("eth_getBlockByNumber", [hex(head + 3), False])["hash"] != hash_before
    assert too_deep.exit_code == 1
    assert "never reorgs" in too_deep.output


def test_mine_says_when_no_devchain_answers(chain: DevChain) -> None:
    url = chain.url
    chain.stop()

    result = CliRunner().invoke(app, ["devchain", "mine", "--url", url])

    assert result.exit_code == 1
    assert "cannot reach" in result.output


def test_the_devchain_command_serves_and_prints_the_services_settings() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.cli", "devchain", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:  # blocks until the devchain has printed its settings
            lines.append(line.strip())
            if line.strip().startswith("PUMPPARTY_TREASURY_ADDRESS="):
                break
        env = dict(line.split("=", 1) for line in lines if line.startswith("PUMPPARTY_"))
        mined = CliRunner().invoke(app, ["devchain", "mine", "--url", env["PUMPPARTY_EVM_RPC_URL"]])
    finally:
        process.send_signal(signal.SIGINT)
        out, errors = process.communicate(timeout=60)

    assert env["PUMPPARTY_CHAIN_ID"] == "31337"
    assert env["PUMPPARTY_USDC_CONTRACT"] == USDC_ADDRESS
    assert env["PUMPPARTY_TREASURY_ADDRESS"] == demo_wallet(0).address
    assert env["PUMPPARTY_EVM_RPC_URL"].startswith("http://127.0.0.1:")
    assert any(demo_wallet(1).address in line and "custodian" in line for line in lines)
    assert mined.exit_code == 0, mined.output
    assert process.returncode == 0, errors
    assert "devchain stopped" in out
