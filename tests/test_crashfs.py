"""The crash file system keeps exactly what the strict POSIX model says a disk keeps: a test tool
that kept more would let a missing fsync pass (tests/support/crashfs.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from vmgateway.files import fsync_directory


def write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def disk(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None: a folder)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


@pytest.mark.peer
def test_only_what_was_fsynced_survives_a_cut(crashfs: Any) -> None:
    root: Path = crashfs.mountpoint
    (root / "spool").mkdir()
    write(root / "spool" / "synced", b"kept", sync=True)
    write(root / "spool" / "named-only", b"its bytes never synced", sync=False)
    fsync_directory(root / "spool")
    fsync_directory(root)
    write(root / "spool" / "unnamed", b"synced, but its folder was not", sync=True)
    write(root / "late", b"its folder was synced before it", sync=True)
    os.rename(root / "spool" / "synced", root / "moved")  # neither folder synced: not moved
    assert crashfs.cut()["ok"]
    crashfs.mount()
    assert disk(root) == {"spool": None, "spool/named-only": b"", "spool/synced": b"kept"}

    # What survived is durable as it is: changed in place without an fsync, it stays as it was.
    write(root / "spool" / "synced", b"changed", sync=False)
    os.rename(root / "spool" / "named-only", root / "spool" / "renamed")
    fsync_directory(root / "spool")  # the rename is durable now, the change of bytes is not
    crashfs.cut()
    crashfs.mount()
    assert disk(root) == {"spool": None, "spool/renamed": b"", "spool/synced": b"kept"}


@pytest.mark.peer
def test_a_failed_fsync_drops_the_data_and_a_second_fsync_does_not_bring_it_back(crashfs: Any) -> None:
    """Linux after a failed writeback ("fsyncgate"): the pages are marked clean, the data is gone."""
    root: Path = crashfs.mountpoint
    crashfs.ask("fail_fsync", after=1, path="/file")
    fd = os.open(root / "file", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"first")
        os.fsync(fd)  # the first matching fsync succeeds
        os.write(fd, b"second")
        with pytest.raises(OSError) as failed:
            os.fsync(fd)
        assert failed.value.errno == errno.EIO
        os.fsync(fd)  # succeeds: nothing is dirty any more
    finally:
        os.close(fd)
    fsync_directory(root)
    crashfs.cut()
    crashfs.mount()
    kept = (root / "file").read_bytes()  # the size was saved by the second fsync, the bytes were not
    assert kept == b"first" + bytes(len(b"second"))


@pytest.mark.peer
def test_past_the_quota_a_write_finds_no_space_and_statfs_says_so(crashfs: Any) -> None:
    root: Path = crashfs.mountpoint
    crashfs.ask("quota", bytes=crashfs.ask("stats")["used"] + 10_000)
    assert os.statvfs(root).f_bavail * os.statvfs(root).f_frsize <= 10_000
    with pytest.raises(OSError) as full:
        write(root / "big", bytes(20_000), sync=False)
    assert full.value.errno == errno.ENOSPC
    crashfs.ask("quota", bytes=None)
    write(root / "big", bytes(20_000), sync=True)
