"""One gateway per data folder: an exclusive lock taken before anything touches the spool or
the journal.

A second `vmgateway run` on the same folder once ran the start-up recovery on the live spool
(which may remove partial files a running association is writing) and wrote a false `recovery`
and `start` event before failing on the port. The lock (flock, released by the kernel when the
process dies, so a crash never leaves it behind) stops it first, naming the holder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "vmgateway.lock"


class DataFolderBusy(Exception):
    """Another process runs a gateway on this data folder."""


class DataFolderLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our PID into the file; raise DataFolderBusy naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataFolderBusy(f"{self.path.parent} is in use by another gateway (process {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
