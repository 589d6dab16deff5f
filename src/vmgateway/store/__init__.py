"""The store: the only thing receivers and transfers share.

`Store` is thread-safe: DICOM associations (pynetdicom threads) and asyncio code call it alike.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

from vmgateway.store.access import TRANSFERS_ACTIVE, claim_gateway_id, set_setting
from vmgateway.store.journal import Journal, JournalClosed, JournalError, Write, connect
from vmgateway.store.records import (
    AstmSummary,
    DicomInstance,
    Hl7Details,
    Hl7Message,
    Outcome,
    Receipt,
    Sender,
    complete_quiet_studies,
    record_astm_message,
    record_contact,
    record_dicom_instance,
    record_event,
    record_hl7_details,
    record_hl7_message,
)
from vmgateway.store.recovery import StartupCheck, stopped_cleanly
from vmgateway.store.retention import forget_files, removable_files
from vmgateway.store.spool import Spool, SpoolFull

__all__ = [
    "AstmSummary",
    "DicomInstance",
    "Hl7Details",
    "Hl7Message",
    "JournalClosed",
    "JournalError",
    "Outcome",
    "Receipt",
    "Sender",
    "Store",
    "SpoolFull",
    "StartupCheck",
]

log = logging.getLogger(__name__)

_RETENTION_BATCH = 500


class Store:
    def __init__(self, data_dir: Path, min_free_mb: int) -> None:
        self.spool = Spool(data_dir / "spool", min_free_mb * 2**20)
        self.journal = Journal(data_dir / "journal.sqlite")
        self._listeners: list[Callable[[], None]] = []

    @property
    def incoming_dir(self) -> Path:
        """Where receivers write partial files: same file system as the spool."""
        return self.spool.incoming

    def open(self) -> StartupCheck:
        """Open the spool and the journal, clear what a crash left, and say what was found.

        Partial files and spool files the journal never recorded (the process died between a
        file's rename and its journal commit) were never acknowledged, so their senders still
        have them: they are removed, and counted. After an unclean stop every recorded file is
        also looked for; one that is missing is reported, never forgotten. Done before any
        receiver runs, so no commit can be under way.
        """
        partial = self.spool.open()
        self.journal.open()
        with self.reading() as conn:
            unrecorded = self.spool.remove_unrecorded(
                lambda folder: {row[0] for row in conn.execute(  # "/" + 1 == "0": the folder's range
                    "SELECT spool_path FROM items WHERE spool_path >= ? AND spool_path < ?",
                    (folder, folder[:-1] + "0"))}
            )
            clean = stopped_cleanly(conn)
            missing = [] if clean else [
                (int(item_id), path) for item_id, path in conn.execute(
                    "SELECT id, spool_path FROM items WHERE spool_path IS NOT NULL")
                if not (self.spool.root / path).is_file()
            ]
        return StartupCheck(clean, partial, unrecorded, missing)

    def close(self) -> None:
        self.journal.close()

    def put_dicom(self, temporary: Path, instance: DicomInstance, sender: Sender) -> Receipt:
        """Keep the file at `temporary` and record it; return only once both are durable.

        Raises SpoolFull, OSError or JournalError when the promise cannot be kept.
        """
        spooled = self.spool.absorb(temporary, "dicom", ".dcm")
        try:
            receipt = self.journal.write(record_dicom_instance(instance, spooled, sender, time.time()))
        finally:
            self.spool.release(spooled.relative_path)
        self._tell_listeners()
        return receipt

    def submit_hl7(self, raw: bytes | bytearray, message: Hl7Message, sender: Sender) -> Future[Receipt]:
        """Queue a message's raw bytes and header for the journal; the future resolves once
        they are committed (fsync'ed). Callable from the event loop: it never blocks.

        Raises SpoolFull at once when the disk is below the watermark; the future may fail
        with JournalError.
        """
        return self._submit_message(raw, lambda sha256: record_hl7_message(message, raw, sha256, sender, time.time()))

    def submit_astm(self, raw: bytes, summary: AstmSummary, sender: Sender) -> Future[Receipt]:
        """As submit_hl7, for an ASTM message: resolves once committed (fsync'ed)."""
        return self._submit_message(raw, lambda sha256: record_astm_message(raw, summary, sha256, sender, time.time()))

    def _submit_message(self, raw: bytes | bytearray, record: Callable[[str], Write[Receipt]]) -> Future[Receipt]:
        """A message's write, given its SHA-256, queued; the destinations hear once it is committed."""
        self.spool.check_room()
        future = self.journal.submit(record(hashlib.sha256(raw).hexdigest()))
        future.add_done_callback(lambda _: self._tell_listeners())
        return future

    def hl7_without_details(self) -> list[tuple[int, bytes]]:
        """Messages kept but not yet read in full (the gateway stopped in between)."""
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT h.item_id, p.data FROM hl7_messages h JOIN payloads p ON p.item_id = h.item_id"
                " WHERE h.details_read = 0"
            ).fetchall()
        return [(int(item_id), bytes(data)) for item_id, data in rows]

    def add_hl7_details(self, details: list[tuple[int, Hl7Details]]) -> None:
        """Record what full parses found, many messages in one commit (nothing is promised
        on it: a lost batch is read again at the next start)."""
        self.journal.write(record_hl7_details(details))

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection of its own (WAL: reads never wait for the writer)."""
        conn = connect(self.journal.path, read_only=True)
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        finally:
            conn.close()

    def listen(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from any thread) whenever an item was kept or transfers were
        switched, so that whoever waits for work need not poll for it."""
        self._listeners.append(listener)

    def _tell_listeners(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a listener's trouble (its loop closed at shutdown) is not the sender's
                log.debug("store listener failed", exc_info=True)

    def switch_transfers(self, active: bool) -> None:
        self.journal.write(set_setting(TRANSFERS_ACTIVE, "true" if active else "false"))
        self._tell_listeners()

    def payload(self, item_id: int) -> bytes:
        """An item's bytes kept in the journal (HL7: at most hl7.max_message_bytes)."""
        with self.reading() as conn:
            row = conn.execute("SELECT data FROM payloads WHERE item_id = ?", (item_id,)).fetchone()
        if row is None:
            raise KeyError(f"item {item_id} has no payload in the journal")
        return bytes(row[0])

    def gateway_id(self) -> str:
        """This box's identity (made once, kept in the journal)."""
        return self.journal.write(claim_gateway_id(str(uuid.uuid4())))

    def record_contact(self, sender: Sender) -> None:
        """Note that a sender was heard from (a C-ECHO, a test message) without an item."""
        self.journal.write(record_contact(sender, time.time()))

    def record_event(self, kind: str, detail: str = "") -> None:
        self.journal.write(record_event(kind, detail, time.time()))

    def remove_delivered_files(self, delivered_before: float, soft_min_free_bytes: int) -> int:
        """Remove files delivered before `delivered_before` and, while free space is under
        `soft_min_free_bytes`, younger delivered ones too, oldest first. Returns how many."""
        removed = 0
        for _ in range(10000):  # bounded: each pass removes up to _RETENTION_BATCH files or stops
            low_disk = self.spool.free_bytes() < soft_min_free_bytes
            with self.reading() as conn:
                candidates = removable_files(conn, None if low_disk else delivered_before, _RETENTION_BATCH)
            if not candidates:
                break
            doomed = self.journal.write(forget_files(self.spool, candidates, time.time()))
            removed += sum(self.spool.remove_doomed(path) for path in doomed)
            if not doomed or len(candidates) < _RETENTION_BATCH and not low_disk:
                break
            if low_disk and self.spool.free_bytes() >= soft_min_free_bytes:
                break
        return removed

    def complete_quiet_studies(self, stable_after_s: float) -> list[str]:
        now = time.time()
        return self.journal.write(complete_quiet_studies(now - stable_after_s, now))
