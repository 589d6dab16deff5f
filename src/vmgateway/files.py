"""Writing files so that a crash or power cut leaves either the old version or the new one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (the file's own fsync does not cover it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write beside `path`, fsync, rename over it, fsync the folder: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def free_mb(path: Path) -> float:
    """Free space where `path` is, or will be once made (the nearest existing parent's file system)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 2**20
