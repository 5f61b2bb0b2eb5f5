"""What every `pumpparty` command shares: the settings read once at startup, the services
opened for one command, the context an operator's decision carries, and one line on stderr
for a failure. The top-level app (`scripts/cli.py`) and its sub-apps (`dead-letters`,
`jobs`, `backup`) use these, so a refusal reads the same whichever command made it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn
from uuid import uuid4

import typer

from aggregates.base import CommandContext
from aggregates.errors import DomainError
from runtime.clock import system_clock
from runtime.settings import Settings
from services.bootstrap import Services, open_services

OPERATOR = "operator:cli"
"""The actor of every decision taken at the command line."""


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit with `code`."""
    typer.echo(f"pumpparty: {message}", err=True)
    raise typer.Exit(code)


def settings_of(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@contextmanager
def opened(ctx: typer.Context, *, migrate: bool = False) -> Iterator[Services]:
    """The services for one command; a refusal by the domain is one line and exit 1."""
    services = open_services(settings_of(ctx), run_migrations=migrate)
    try:
        yield services
    except DomainError as error:
        fail(str(error))
    finally:
        services.close()


def operator_context(action: str) -> CommandContext:
    """An operator's decision at the command line: its actor, now, and a correlation id
    naming the command, so the audit log shows where it came from."""
    return CommandContext(
        actor=OPERATOR,
        occurred_at=system_clock(),
        correlation_id=f"{action}:{uuid4().hex[:12]}",
    )
