"""Writing files so that a crash or power cut leaves either the old version or the new one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (the file's own fsync does not cover it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Make every file and folder under `root` durable, the deepest first (each folder once its
    entries' files are). For what another program wrote there (pip writes a release's venv and
    fsyncs nothing); sync(2) would not do: a file system need not have written anything when it
    returns."""
    for folder, _, names in os.walk(root, topdown=False):
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):  # its own entry is the folder's; its target is not ours
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_directory(Path(folder))


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


def write_toml(path: Path, data: dict[str, Any]) -> Path | None:
    """Write a TOML file atomically, keeping the previous one beside it as .bak (returned).

    An existing file is changed in place (tomlkit), not rewritten from the values: the comments and
    the order a person gave it stay where they were, and only what changed changes."""
    import tomlkit  # here, not at the top: 4.7 MB that the running gateway needs only for a remote change

    backup = None
    document = tomlkit.document()
    if path.exists():
        backup = path.with_name(path.name + ".bak")
        write_atomically(backup, path.read_bytes())
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    _update(document, data)
    write_atomically(path, tomlkit.dumps(document).encode())  # readable by the service's user: secrets live in files
    return backup


def _update(table: Any, values: dict[str, Any]) -> None:
    """Make `table` hold `values`: changed keys set, gone ones removed, untouched ones (and their
    comments) left as they are."""
    for key in [key for key in table if key not in values]:
        del table[key]
    for key, value in values.items():
        if isinstance(value, dict) and key in table and isinstance(table[key], dict):
            _update(table[key], value)
        elif key not in table or table[key] != value:
            table[key] = value
