"""Real PostgreSQL for tests: the embedded server, or PUMPPARTY_DATABASE_URL's server.

Each test that needs a database gets a fresh one copied from a migrated template, so no
test depends on another's leftovers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from runtime.database import start_embedded_server
from services.bootstrap import migrate

TEMPLATE = "pumpparty_template"


def server_url(scratch: Path) -> str:
    return os.environ.get("PUMPPARTY_DATABASE_URL") or start_embedded_server(scratch / "postgres")


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def prepare_template(url: str) -> None:
    from projections.registry import PROJECTIONS
    from projections.state import Projections
    from runtime.settings import Settings
    from services.bootstrap import open_event_log

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    template_url = with_dbname(url, TEMPLATE)
    migrate(template_url)
    event_log = open_event_log(template_url, Settings(database_url=template_url))
    try:
        Projections(
            event_log.recorder.datastore, event_log.mapper, list(PROJECTIONS)
        ).ensure_created()  # type: ignore[attr-defined]
    finally:
        event_log.close()


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        yield with_dbname(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
