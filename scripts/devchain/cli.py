"""`pumpparty devchain`: serve the devchain; `mine N` and `reorg DEPTH` on a running one."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated, Any

import httpx
import typer

DEFAULT_PORT = 8545
"""The port PUMPPARTY_EVM_RPC_URL points at by default: a service started with no chain
settings but the printed ones finds the devchain there."""
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"

devchain_app = typer.Typer(
    help="A real EVM on loopback with a USDC contract and funded demo wallets (development only)."
)

UrlOption = Annotated[str, typer.Option("--url", help="The running devchain's JSON-RPC URL.")]


@devchain_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Loopback address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = DEFAULT_PORT,
    block_interval: Annotated[
        float | None,
        typer.Option(help="Mine a block every this many seconds (default: one per transaction)."),
    ] = None,
    chain_id: Annotated[int, typer.Option(help="The chain id it answers with.")] = 31337,
) -> None:
    """Serve the devchain until interrupted; print what a service needs to use it."""
    if ctx.invoked_subcommand is not None:
        return
    # Imported here: py-evm takes a while to load, and `mine`/`reorg` need none of it.
    from scripts.devchain.chain import DevChain
    from scripts.devchain.wallets import DEMO_MNEMONIC, DEMO_WALLETS

    chain = DevChain(chain_id=chain_id, block_interval=block_interval)
    try:
        url = chain.start(host, port)
    except OSError as error:
        typer.echo(f"devchain: cannot listen on {host}:{port}: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"devchain: {url}  chain id {chain.chain_id}  head block {chain.head()}")
    typer.echo(f"USDC (6 decimals): {chain.usdc_address}")
    typer.echo(f"demo wallets (PUBLIC demo mnemonic, never for real funds: {DEMO_MNEMONIC!r}):")
    roles = {0: "treasury", 1: "custodian"}
    for index in range(DEMO_WALLETS):
        wallet = chain.demo_wallet(index)
        usdc = chain.usdc_balance(wallet.address) / 10**6
        role = roles.get(index, "user")
        typer.echo(f"  {index}  {wallet.address}  {role:<9}  {usdc:,.2f} USDC")
    mining = f"a block every {block_interval:g}s" if block_interval else "one block per transaction"
    typer.echo(f"mining: {mining}")
    typer.echo("\nfor the service:")
    for name, value in chain.settings_env().items():
        typer.echo(f"  {name}={value}")
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopping.wait()
    chain.stop()
    typer.echo("devchain stopped")


@devchain_app.command()
def mine(
    blocks: Annotated[int, typer.Argument(min=1, help="How many blocks.")] = 1,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Mine blocks on a running devchain; print the new head."""
    head = int(call(url, "evm_mine", [blocks]), 16)
    typer.echo(f"head block {head}")


@devchain_app.command()
def reorg(
    depth: Annotated[int, typer.Argument(min=1, help="How many of the last blocks to replace.")],
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Replace the last DEPTH blocks of a running devchain with empty ones."""
    head = int(call(url, "devchain_reorg", [depth]), 16)
    typer.echo(f"reorganised the last {depth} block(s); head block {head}")


def call(url: str, method: str, params: list[Any]) -> Any:
    try:
        response = httpx.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        )
    except httpx.HTTPError as error:
        typer.echo(f"devchain: cannot reach {url}: {error}", err=True)
        raise typer.Exit(1) from error
    body = response.json()
    if "error" in body:
        typer.echo(f"devchain: {body['error']['message']}", err=True)
        raise typer.Exit(1)
    return body["result"]
