"""The spool: received files on disk, written so that a crash can never leave half a file
where a whole one is expected.

Files are named by the SHA-256 of their bytes (`dicom/ab/abcdef….dcm`), never by a string a
sender chose: a hostile or broken UID cannot walk out of the folder, two versions of one SOP
Instance UID with different bytes cannot overwrite each other, and the same bytes sent twice
land on the same name. The journal maps SOP Instance UIDs to these names.

A file arrives in `incoming/` (on the same file system, so the final step is a rename), is
fsync'ed, renamed into place and its folder fsync'ed. Only then may the journal commit the row
that records it (its SQL may run while the folder's fsync does).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path

from vmgateway.files import fsync_directory
from vmgateway.store.unavailable import StoreUnavailable

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_OVERLAP_FROM = 1 << 20
"""From this size on, fsync and hashing run side by side (below, a thread hand-off costs more)."""
_FANOUT = [f"{i:02x}" for i in range(256)]
_KINDS = ("dicom",)
"""Kinds of item kept as spool files (HL7 messages live in the journal)."""


class SpoolFull(StoreUnavailable):
    """Free space is below the configured watermark: nothing more may be accepted."""

    said = "gateway disk full"


class SpoolFailed(StoreUnavailable):
    """The data disk failed under the spool (an I/O error): nothing was kept."""

    said = "gateway disk failing"


@dataclass(frozen=True, slots=True)
class SpooledFile:
    relative_path: str
    """Path under the spool folder, e.g. `dicom/ab/ab12….dcm`."""
    sha256: str
    size: int


class Spool:
    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.min_free_bytes = min_free_bytes
        self._fsync_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="spool-fsync")
        self._names = threading.Lock()
        self._claimed: dict[str, int] = {}
        """Content names a receiver is placing right now (until its journal commit)."""
        self._doomed: set[str] = set()
        """Content names retention cleared in the journal and will remove once committed."""

    def open(self) -> int:
        """Create the folder tree and remove what a crash left in `incoming/`; return how many.

        Anything still in `incoming/` was never acknowledged (acknowledgement comes after the
        rename out of it), so it is safe to delete.
        """
        self.incoming.mkdir(parents=True, exist_ok=True)
        removed = self.remove_partial_files(older_than_s=0)
        for kind in _KINDS:
            base = self.root / kind
            for sub in _FANOUT:
                (base / sub).mkdir(parents=True, exist_ok=True)
            fsync_directory(base)
        fsync_directory(self.root)
        return removed

    def remove_partial_files(self, older_than_s: float) -> int:
        """Delete files in `incoming/` untouched for `older_than_s` seconds; return how many.

        A transfer in progress writes to its file at least every network timeout, so a file
        older than that belongs to an association that was aborted: it was never acknowledged.
        """
        horizon = time.time() - older_than_s
        removed = 0
        for entry in self.incoming.iterdir():
            try:
                if entry.is_file() and entry.stat().st_mtime <= horizon:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:  # its transfer just completed and took it
                continue
        if removed:
            log.info("removed unacknowledged partial files", extra={"count": removed})
        return removed

    def remove_unrecorded(self, recorded_in: Callable[[str], set[str]]) -> int:
        """Delete content files that `recorded_in(folder)` does not list; return how many.

        Walks one fan-out folder at a time, so only 1/256 of the journal's paths are in
        memory at once.
        """
        removed = 0
        for kind in _KINDS:
            for sub in _FANOUT:
                folder = f"{kind}/{sub}/"
                recorded = recorded_in(folder)
                for entry in (self.root / folder).iterdir():
                    if f"{folder}{entry.name}" not in recorded:
                        entry.unlink()
                        removed += 1
        return removed

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def check_room(self) -> None:
        try:
            free = self.free_bytes()
        except OSError as exc:
            raise SpoolFailed(f"the data disk cannot say its free space: {exc}") from exc
        if free < self.min_free_bytes:
            raise SpoolFull(
                f"only {free // 2**20} MB free on the data disk, "
                f"below storage.min_free_mb = {self.min_free_bytes // 2**20}"
            )

    def fsync_soon(self, temporary: Path) -> Future[None]:
        """Start the fsync of a received file now, so that its checks run while the disk works
        (both release the GIL): 0.3 ms of a small instance's 4 ms here. Hand the future to
        `absorb`, which waits for it and raises what it raised."""
        return self._fsync_pool.submit(_fsync_file, temporary)

    def absorb(self, temporary: Path, kind: str, suffix: str, fsynced: Future[None] | None = None,
               sha256: str | None = None) -> tuple[SpooledFile, Future[None]]:
        """Give the file at `temporary` (inside `incoming/`) its content name once its data is
        durable (`fsynced`: its fsync, started by `fsync_soon`; `sha256`: its hash, taken by the
        receiver as the bytes arrived, else read back here). Returns it with the fsync of its new
        folder entry, under way: the journal may record the file only once that is done (see
        `Store.put_dicom`), and meanwhile does its SQL.

        Raises SpoolFull when the watermark is crossed, OSError on disk trouble; in both
        cases nothing new is left visible in the spool.
        """
        self.check_room()
        if sha256 is None:
            size, sha256 = self._hash_and_fsync(temporary, fsynced)
        else:
            size = os.stat(temporary).st_size
            fsynced.result() if fsynced is not None else _fsync_file(temporary)
        relative = f"{kind}/{sha256[:2]}/{sha256}{suffix}"
        final = self.root / relative
        with self._names:  # the same bytes may be on their way out: keep them
            self._claimed[relative] = self._claimed.get(relative, 0) + 1
            self._doomed.discard(relative)
        try:
            os.replace(temporary, final)
            named = self._fsync_pool.submit(fsync_directory, final.parent)
        except BaseException:
            self.release(relative)
            raise
        return SpooledFile(relative, sha256, size), named

    def _hash_and_fsync(self, temporary: Path, fsynced: Future[None] | None) -> tuple[int, str]:
        with open(temporary, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if fsynced is not None:
                sha256 = _sha256(handle, size)
                fsynced.result()
            elif size >= _OVERLAP_FROM:
                # Both release the GIL: the kernel writes the data out while we hash it.
                syncing = self._fsync_pool.submit(os.fsync, handle.fileno())
                sha256 = _sha256(handle, size)
                syncing.result()
            else:
                sha256 = _sha256(handle, size)
                os.fsync(handle.fileno())
        return size, sha256

    def path_of(self, relative: str) -> Path:
        """The file a journal row names (its path is kept relative to the spool)."""
        return self.root / relative

    def release(self, relative: str) -> None:
        """The receiver that absorbed `relative` has committed (or given up) its journal row."""
        with self._names:
            count = self._claimed.pop(relative, 0) - 1
            if count > 0:
                self._claimed[relative] = count

    def doom(self, relative: str) -> bool:
        """Mark a file for removal unless a receiver is placing the same bytes right now."""
        with self._names:
            if relative in self._claimed:
                return False
            self._doomed.add(relative)
            return True

    def remove_doomed(self, relative: str) -> bool:
        """Remove a doomed file, unless a receiver claimed the same bytes since; return whether removed."""
        with self._names:
            if relative not in self._doomed:
                return False
            self._doomed.discard(relative)
            try:
                (self.root / relative).unlink()
            except FileNotFoundError:
                return False
        return True


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(handle: BufferedReader, size: int) -> str:
    """Hash in chunks through one reused buffer: bounded memory, no copies per chunk.

    (A memory map would be simpler, but every page it touches counts in the process's
    resident size: a 1 GB loop would look like 1 GB of memory to whoever watches the box.)
    """
    sha256 = hashlib.sha256()
    buffer = bytearray(min(size, _CHUNK) or 1)
    view = memoryview(buffer)
    while count := handle.readinto(buffer):
        sha256.update(view[:count])
    return sha256.hexdigest()
