"""The store: the only thing receivers and transfers share, and the only way to the journal
and the spool.

`Store` is thread-safe: DICOM associations (pynetdicom threads) and asyncio code call it alike.
Methods that code on the event loop calls are `async` and do their SQLite and fsync work off
the loop (reads in a worker thread, writes queued to the journal's writer and awaited), so a
slow query never delays an HL7 or ASTM acknowledgement. The rest — the DICOM side's, called in
pynetdicom's association threads, and the command line's — block. SQL lives only in this
package; what it raises is its own, never sqlite3's: StoreUnavailable (SpoolFull, JournalError)
whenever a promise cannot be kept now, which each protocol's seam says as "try again later".

Its parts, each with one concern: `feed` (what was received, for the API and the push sinks),
`deliveries` (push transfers' queue), `worklist` (entries and procedure steps), `tokens` and
`settings` (what the API set), `lab` (lab orders and their queue to the analyzers).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

from vmgateway.model import AstmSummary, DicomInstance, Hl7Details, Hl7Message, Receipt, Sender
from vmgateway.records import JournalState, StartupCheck
from vmgateway.store.access import KeptSettings, TokenExists, Tokens
from vmgateway.store.deliveries import Deliveries
from vmgateway.store.feed import Feed
from vmgateway.store.holdings import held_instances
from vmgateway.store.journal import Journal, JournalClosed, JournalError, Write
from vmgateway.store.lab import LabOrders
from vmgateway.store.lock import DataFolderBusy, DataFolderLock
from vmgateway.store.recording import (
    complete_quiet_studies,
    record_astm_message,
    record_contact,
    record_dicom_instance,
    record_event,
    record_hl7_details,
    record_hl7_message,
)
from vmgateway.store.recovery import stopped_cleanly
from vmgateway.store.retention import forget_files, removable_files
from vmgateway.store.spool import Spool, SpoolFailed, SpoolFull
from vmgateway.store.unavailable import StoreUnavailable
from vmgateway.store.worklist import StepExists, Worklist

__all__ = [
    "DataFolderBusy",
    "JournalClosed",
    "JournalError",
    "StepExists",
    "SpoolFull",
    "Store",
    "StoreUnavailable",
    "TokenExists",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

Change = Literal["dicom", "hl7", "astm", "transfers", "lab"]
"""What a listener may wait for: an item of a kind kept, transfers switched, a lab order's message queued."""

_RETENTION_BATCH = 500


def once(done: Future[None], write: Write[T]) -> Write[T]:
    """`write`, which the journal keeps only if `done` succeeds: its SQL runs while `done` (the
    fsync of the folder that names a new spool file) is under way, and it waits for it before
    its savepoint ends. The COMMIT comes after every write of the batch, so a row never names a
    file whose name a crash could still take away; a failure rolls the write back alone.
    Measured here: the SQL (85 µs) and the hand-over to the writer no longer follow the folder's
    fsync (0.2 ms) but run beside it."""

    def run(conn: sqlite3.Connection) -> T:
        result = write(conn)
        done.result()
        return result

    return run


class Store:
    def __init__(self, data_dir: Path, min_free_mb: int) -> None:
        self._spool = Spool(data_dir / "spool", min_free_mb * 2**20)
        self._journal = Journal(data_dir / "journal.sqlite")
        self._lock = DataFolderLock(data_dir)
        self._listeners: list[tuple[frozenset[Change], Callable[[], None]]] = []
        self.feed = Feed(self._journal, self._spool)
        self.deliveries = Deliveries(self._journal, self._spool)
        self.worklist = Worklist(self._journal)
        self.tokens = Tokens(self._journal)
        self.settings = KeptSettings(self._journal, partial(self._tell_listeners, "transfers"))
        self.lab = LabOrders(self._journal, partial(self._tell_listeners, "lab"))

    @property
    def incoming_dir(self) -> Path:
        """Where receivers write partial files: same file system as the spool."""
        return self._spool.incoming

    @property
    def commits(self) -> int:
        """Journal transactions committed so far (fewer than writes: group commit)."""
        return self._journal.commits

    def journal_state(self) -> JournalState:
        """Whether the journal's commits fail now (nothing is acknowledged then), since when, why."""
        failing = self._journal.failing
        if failing is None:
            return JournalState("ok", None, None)
        return JournalState("failing", failing[0], failing[1])

    def open_journal(self) -> None:
        """Open (create or migrate) the journal alone, for a command beside a running gateway:
        the spool, which the gateway owns, is left as it is."""
        self._journal.open()

    def open(self) -> StartupCheck:
        """Open the spool and the journal, clear what a crash left, and say what was found.

        Partial files and spool files the journal never recorded (the process died between a
        file's rename and its journal commit) were never acknowledged, so their senders still
        have them: they are removed, and counted. After an unclean stop every recorded file is
        also looked for; one that is missing is reported, never forgotten. Done before any
        receiver runs, so no commit can be under way. Raises DataFolderBusy, before touching
        anything, when another gateway runs on the same data folder.
        """
        self._lock.acquire()
        try:
            partial = self._spool.open()
            self._journal.open()
        except BaseException:
            self._lock.release()
            raise

        def check(conn: sqlite3.Connection) -> StartupCheck:
            unrecorded = self._spool.remove_unrecorded(
                lambda folder: {row[0] for row in conn.execute(  # "/" + 1 == "0": the folder's range
                    "SELECT spool_path FROM items WHERE spool_path >= ? AND spool_path < ?",
                    (folder, folder[:-1] + "0"))}
            )
            clean = stopped_cleanly(conn)
            missing = [] if clean else [
                (int(item_id), path) for item_id, path in conn.execute(
                    "SELECT id, spool_path FROM items WHERE spool_path IS NOT NULL")
                if not self._spool.path_of(path).is_file()
            ]
            return StartupCheck(clean, partial, unrecorded, missing)

        return self._journal.read(check)

    def close(self) -> None:
        self._journal.close()
        self._lock.release()

    def fsync_soon(self, temporary: Path) -> Future[None]:
        """Start making a received file durable while it is checked; give the result to `put_dicom`."""
        return self._spool.fsync_soon(temporary)

    def put_dicom(self, temporary: Path, instance: DicomInstance, sender: Sender,
                  fsynced: Future[None] | None = None, sha256: str | None = None) -> Receipt:
        """Keep the file at `temporary` (`sha256`: its hash, if the receiver took it) and record
        it; return only once both are durable.

        Raises StoreUnavailable (SpoolFull, SpoolFailed, JournalError) when the promise cannot be kept.
        """
        try:
            spooled, named = self._spool.absorb(temporary, "dicom", ".dcm", fsynced, sha256)
            try:
                receipt = self._journal.write(once(named, record_dicom_instance(instance, spooled, sender,
                                                                                time.time())))
            finally:
                self._spool.release(spooled.relative_path)
        except OSError as exc:  # the file's fsync, its rename or its folder's fsync: nothing is recorded
            raise SpoolFailed(f"the received file could not be kept: {exc}") from exc
        except TimeoutError as exc:
            raise JournalError("the journal did not commit within a minute") from exc
        self._tell_listeners("dicom")
        return receipt

    def submit_hl7(self, raw: bytes | bytearray, message: Hl7Message, sender: Sender) -> Future[Receipt]:
        """Queue a message's raw bytes and header for the journal; the future resolves once
        they are committed (fsync'ed). Callable from the event loop: it never blocks.

        Raises SpoolFull at once when the disk is below the watermark; the future may fail
        with JournalError.
        """
        return self._submit_message("hl7", raw,
                                    lambda sha256: record_hl7_message(message, raw, sha256, sender, time.time()))

    def submit_astm(self, raw: bytes, summary: AstmSummary, sender: Sender) -> Future[Receipt]:
        """As submit_hl7, for an ASTM message: resolves once committed (fsync'ed)."""
        return self._submit_message("astm", raw,
                                    lambda sha256: record_astm_message(raw, summary, sha256, sender, time.time()))

    def _submit_message(self, kind: Change, raw: bytes | bytearray,
                        record: Callable[[str], Write[Receipt]]) -> Future[Receipt]:
        """A message's write, given its SHA-256, queued; the destinations hear once it is committed."""
        self.check_room()
        future = self._journal.submit(record(hashlib.sha256(raw).hexdigest()))
        future.add_done_callback(lambda _: self._tell_listeners(kind))
        return future

    def check_room(self) -> None:
        """Raise SpoolFull when the disk is below the watermark (before a sender's data is taken)."""
        self._spool.check_room()

    def free_bytes(self) -> int:
        return self._spool.free_bytes()

    async def hl7_without_details(self) -> list[tuple[int, bytes]]:
        """Messages kept but not yet read in full (the gateway stopped in between)."""

        def read(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            rows = conn.execute(
                "SELECT h.item_id, p.data FROM hl7_messages h JOIN payloads p ON p.item_id = h.item_id"
                " WHERE h.details_read = 0"
            ).fetchall()
            return [(int(item_id), bytes(data)) for item_id, data in rows]

        return await self._journal.read_async(read)

    def add_hl7_details(self, details: list[tuple[int, Hl7Details]]) -> None:
        """Record what full parses found, many messages in one commit (nothing is promised
        on it: a lost batch is read again at the next start). Blocks: called in a worker thread."""
        self._journal.write(record_hl7_details(details, time.time()))

    def held_instances(self, study_uid: str) -> dict[str, set[str]]:
        """SOP Instance UIDs held per Series Instance UID of the study (every version counts once)."""
        return self._journal.read(lambda conn: held_instances(conn, study_uid))

    def listen(self, listener: Callable[[], None], *changes: Change) -> None:
        """Call `listener` (from any thread) whenever one of `changes` happened, so that whoever
        waits for work need not poll for it, and nobody is woken for what is not theirs (a lab
        sender once woke at every C-STORE)."""
        self._listeners.append((frozenset(changes), listener))

    def _tell_listeners(self, change: Change) -> None:
        for changes, listener in self._listeners:
            if change not in changes:
                continue
            try:
                listener()
            except Exception:  # a listener's trouble (its loop closed at shutdown) is not the sender's
                log.debug("store listener failed", exc_info=True)

    def record_contact(self, sender: Sender) -> None:
        """Note that a sender was heard from (a C-ECHO) without an item. Blocks: called in an
        association's thread."""
        self._journal.write(record_contact(sender, time.time()))

    async def record_event(self, kind: str, detail: str = "") -> None:
        """An event for people (start, stop, recovery, power, audit, dead items, …)."""
        await self._journal.write_async(record_event(kind, detail, time.time()))

    async def remove_delivered_files(self, delivered_before: float, soft_min_free_bytes: int) -> int:
        """Remove files delivered before `delivered_before` and, while free space is under
        `soft_min_free_bytes`, younger delivered ones too, oldest first. Returns how many."""
        return await asyncio.to_thread(self._remove_delivered_files, delivered_before, soft_min_free_bytes)

    def _remove_delivered_files(self, delivered_before: float, soft_min_free_bytes: int) -> int:
        removed = 0
        for _ in range(10000):  # bounded: each pass removes up to _RETENTION_BATCH files or stops
            low_disk = self._spool.free_bytes() < soft_min_free_bytes
            before = None if low_disk else delivered_before
            candidates = self._journal.read(partial(removable_files, delivered_before=before, limit=_RETENTION_BATCH))
            if not candidates:
                break
            doomed = self._journal.write(forget_files(self._spool, candidates, time.time()))
            removed += sum(self._spool.remove_doomed(path) for path in doomed)
            if not doomed or len(candidates) < _RETENTION_BATCH and not low_disk:
                break
            if low_disk and self._spool.free_bytes() >= soft_min_free_bytes:
                break
        return removed

    async def complete_quiet_studies(self, stable_after_s: float) -> list[str]:
        """Mark studies complete that got no instance for `stable_after_s`; their UIDs."""
        now = time.time()
        return await self._journal.write_async(complete_quiet_studies(now - stable_after_s, now))

    async def remove_partial_files(self, older_than_s: float) -> int:
        """Partial files untouched for `older_than_s`: left by associations that died mid-dataset."""
        return await asyncio.to_thread(self._spool.remove_partial_files, older_than_s)
