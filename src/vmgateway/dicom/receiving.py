"""Where a C-STORE's dataset goes while it arrives: a file in the spool's `incoming/` folder (on
the spool's file system, so that keeping it is a rename) — or nowhere, when the disk cannot
take it.

Both DICOM engines write a dataset as its P-DATA fragments arrive (never whole in memory) through
a `ReceivingFile`: the asyncio engine (vmgateway.dicom.association) makes one itself; pynetdicom
(its engine, and the PACS poller's C-GET) creates its file with `tempfile.NamedTemporaryFile` as
named in its `dimse_messages` module — the one hook it offers, which `install` takes. Two things
are decided there that pynetdicom cannot decide:

- the disk is asked at the C-STORE's start: below the watermark, nothing is written at all;
- a write that fails for want of space (another process filled the disk below the watermark
  check) stops writing and frees what was written.

Either way the rest of the dataset is read and dropped, and `refusal` tells the handler, which
answers 0xA700 (out of resources): the modality keeps the instance and tries again later.
Before, a full disk made pynetdicom raise in the middle of the P-DATA and abort the association.

The asyncio engine has the bytes hashed as they are written (`sha256`), so that the spool need not read the file
back to name it: 35 µs of a small instance, 5 ms and a second pass over the memory for 8 MB
(measured here with SHA-NI; hashlib releases the GIL for the larger fragments).
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from pynetdicom import dimse_messages

from vmgateway.store import SpoolFull, Store

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_refusals: dict[str, SpoolFull] = {}
_lock = threading.Lock()


def install(store: Store) -> None:
    """Make pynetdicom write received datasets through `ReceivingFile`s in `store`'s incoming folder."""

    def open_receiving_file(*_args: Any, **_options: Any) -> ReceivingFile:
        return ReceivingFile(store)

    dimse_messages.NamedTemporaryFile = open_receiving_file  # type: ignore[assignment,attr-defined]


def refusal(path: Path | str) -> SpoolFull | None:
    """Why the dataset meant for `path` was not kept (then forgotten), or None when it was written."""
    with _lock:
        return _refusals.pop(str(path), None)


class ReceivingFile:
    """The file-like object pynetdicom writes a dataset to (it uses `name`, `write`, `file.flush`
    and `close`, and removes the file after the handler ran)."""

    def __init__(self, store: Store, hashing: bool = False) -> None:
        """`hashing`: keep the SHA-256 of what is written (the asyncio engine hands it to the
        store; pynetdicom's engine cannot, its handler sees only the path)."""
        self.file = self
        self._hash = hashlib.sha256() if hashing else None
        try:
            store.check_room()
        except SpoolFull as full:
            self.name = str(store.incoming_dir / f"refused-{uuid.uuid4().hex}.dcm")  # never created
            self._handle: Any = None
            self._refuse(full)
            return
        fd, self.name = _create(store.incoming_dir)
        self._handle = os.fdopen(fd, "wb")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._handle is not None:
            try:
                self._handle.write(data)
            except OSError as exc:
                self._no_space(exc)
            else:
                if self._hash is not None:
                    self._hash.update(data)
        return len(data)

    @property
    def sha256(self) -> str | None:
        """The SHA-256 of what was written so far, in hex (None when not hashing)."""
        return None if self._hash is None else self._hash.hexdigest()

    def flush(self) -> None:
        if self._handle is not None:
            try:
                self._handle.flush()
            except OSError as exc:
                self._no_space(exc)

    def close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:  # its buffer could not be written: the handler has answered already
                pass
            self._handle = None

    def _no_space(self, exc: OSError) -> None:
        """The disk is full: free what was written, refuse the rest. Any other error is raised."""
        if exc.errno not in _NO_SPACE:
            raise exc
        self._drop_what_was_written()
        self._refuse(SpoolFull(f"the data disk is full ({exc.strerror})"))

    def _drop_what_was_written(self) -> None:
        handle, self._handle = self._handle, None
        try:
            handle.close()
        except OSError:
            pass
        Path(self.name).unlink(missing_ok=True)

    def _refuse(self, full: SpoolFull) -> None:
        with _lock:
            _refusals[self.name] = full


def _create(folder: Path) -> tuple[int, str]:
    name = folder / f"{uuid.uuid4().hex}.dcm"
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), str(name)
