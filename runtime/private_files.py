"""Files only this user may read: the secrets kept in the data dir, backup manifests, the
demo's client environment.

Each is created with mode 0600 and written in full under another name before it takes its
own, so no other user ever reads it, not even in the instant between a write and a
`chmod`, and no reader sees half of it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Write whole or not at all, readable by this user only; replaces what was there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _written_aside(path, data)
    partial.replace(path)


def kept_secret(path: Path) -> bytes:
    """The random secret kept at `path`, made the first time it is asked for. Processes that
    race to make it all end up with the one that got there first."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        made = _written_aside(path, secrets.token_urlsafe(48).encode())
        try:
            os.link(made, path)  # takes the name only if nobody has: unlike a rename
        except FileExistsError:
            pass
        finally:
            made.unlink()
    return path.read_bytes().strip()


def _written_aside(path: Path, data: bytes) -> Path:
    aside = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return aside
