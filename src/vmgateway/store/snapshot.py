"""The journal as it was before a release on trial migrated it, and putting it back."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from vmgateway.files import fsync_directory
from vmgateway.store.journal import connect
from vmgateway.store.schema import schema_version

SIDE_FILES = ("-wal", "-shm")


def take(journal: Path, snapshot: Path) -> None:
    """A consistent copy (SQLite's backup API), fsync'ed, in place only once complete."""
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    partial = snapshot.with_name(snapshot.name + ".partial")
    partial.unlink(missing_ok=True)
    source = connect(journal, read_only=True)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, snapshot)
    fsync_directory(snapshot.parent)


def version_of(journal: Path) -> int:
    conn = connect(journal, read_only=True)
    try:
        return schema_version(conn)
    finally:
        conn.close()


def restore(snapshot: Path, journal: Path) -> None:
    """Put the snapshot back as the journal (the service is stopped). The WAL of the journal
    being replaced goes first: left beside the old file, SQLite would replay it into the new one."""
    owner = journal.stat()  # the upgrade runs as root, the service as its own user: keep it the owner
    for suffix in SIDE_FILES:
        journal.with_name(journal.name + suffix).unlink(missing_ok=True)
    partial = journal.with_name(journal.name + ".restoring")
    shutil.copyfile(snapshot, partial)
    os.chown(partial, owner.st_uid, owner.st_gid)
    os.chmod(partial, owner.st_mode & 0o7777)
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, journal)
    fsync_directory(journal.parent)
