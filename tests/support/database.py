"""Real PostgreSQL for tests: the embedded server, or PUMPPARTY_DATABASE_URL's server.

Each test that needs a database gets a fresh one copied from a migrated template, so no
test depends on another's leftovers. The server's URL is the log's owner (it migrates);
every test runs the service as the service role, as deployed, with only its grants: the
template's projection tables are created by that role and belong to it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from runtime.database import service_url_for, start_embedded_server
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
    service_url = service_url_for(template_url)
    # No snapshots are taken here: a throwaway seal key, and no key file left behind.
    settings = Settings(database_url=template_url, snapshot_key=SecretStr(uuid.uuid4().hex))
    event_log = open_event_log(service_url, settings)
    try:
        datastore = event_log.recorder.datastore  # type: ignore[attr-defined]
        Projections(datastore, event_log.mapper, list(PROJECTIONS)).ensure_created()
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
