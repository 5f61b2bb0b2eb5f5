"""Files only this user may read (`runtime.private_files`): made with mode 0600 from the
start, written whole, and a kept secret is the same for every process that asks for it."""

from __future__ import annotations

import threading
from pathlib import Path

from runtime.private_files import kept_secret, write_private


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_private_file_is_written_whole_for_this_user_alone(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "manifest.json"
    write_private(path, b"first")
    write_private(path, b"second, longer")

    assert path.read_bytes() == b"second, longer"
    assert mode_of(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.json"]


def test_a_kept_secret_is_made_once_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "jwt-secret"
    made = kept_secret(path)

    assert len(made) >= 48
    assert kept_secret(path) == made
    assert mode_of(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["jwt-secret"]


def test_processes_racing_to_make_a_secret_all_get_the_same_one(tmp_path: Path) -> None:
    path = tmp_path / "snapshot-key"
    start = threading.Barrier(8)
    got: list[bytes] = []

    def ask() -> None:
        start.wait()
        got.append(kept_secret(path))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(got) == 8
    assert len(set(got)) == 1
    assert got[0] == path.read_bytes().strip()
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot-key"]
