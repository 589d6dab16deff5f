"""The journal: an SQLite database (WAL, synchronous=FULL) with a single writer thread.

Receivers call from many threads (one per DICOM association). Each write is a function of
a connection, queued to the writer, which runs every waiting write inside one transaction
and commits once — group commit: N parallel senders share one fsync instead of paying N.
Every write runs under its own savepoint, so one failing write is rolled back alone and the
others still commit. A caller is answered only after the COMMIT returned, i.e. after the
WAL was fsync'ed: that is the moment an acknowledgement may be sent.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Any, TypeVar

from vmgateway.store.schema import MIGRATION_MARKER, migrate
from vmgateway.store.unavailable import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], T]
Read = Callable[[sqlite3.Connection], T]

_MAX_BATCH = 256
_STOP = object()


class JournalError(StoreUnavailable):
    """The journal could not record a write (nothing of it was committed), or a read."""


class JournalClosed(JournalError):
    """The journal is closing and takes no more writes."""


def connect(path: Path, *, read_only: bool = False, any_thread: bool = False) -> sqlite3.Connection:
    """A connection with the pragmas every user of the journal needs. `any_thread`: it is used
    by one thread at a time, but not always the same one (a response streamed by a thread pool)."""
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=10,
                               check_same_thread=not any_thread)
        conn.row_factory = sqlite3.Row
    else:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    if not read_only:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.commits = 0
        """Transactions committed; fewer than writes when group commit shares fsyncs."""
        self.failing: tuple[str, float] | None = None
        """(error, since when) while commits fail (a disk error, SQLITE_FULL); None once one succeeds."""

    def open(self) -> None:
        """Start the writer; migrate the schema first, so a failed migration stops the start."""
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="journal-writer", daemon=True)
        self._thread.start()
        ready.result()

    def submit(self, write: Write[T]) -> Future[T]:
        future: Future[T] = Future()
        if self._closing.is_set():
            future.set_exception(JournalClosed("the journal is closing"))
        else:
            self._queue.put((write, future))
        return future

    def write(self, write: Write[T], timeout: float | None = 60) -> T:
        """Run `write` in the writer and wait until it is committed (fsync'ed)."""
        return self.submit(write).result(timeout)

    async def write_async(self, write: Write[T]) -> T:
        """`write` from the event loop: queued to the writer without blocking, awaited until committed."""
        return await asyncio.wrap_future(self.submit(write))

    def read(self, read: Read[T]) -> T:
        """Run `read` on a read-only connection of its own, opened and closed in the calling
        thread (WAL: reads never wait for the writer). sqlite3's errors become JournalError."""
        try:
            conn = connect(self.path, read_only=True)
            try:
                return read(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise JournalError(f"journal read failed: {exc}") from exc

    async def read_async(self, read: Read[T]) -> T:
        """`read` from the event loop: run in a worker thread, so SQLite never blocks the loop
        that answers HL7 and ASTM senders."""
        return await asyncio.to_thread(self.read, read)

    def close(self) -> None:
        """Commit what is queued, checkpoint the WAL into the database file and stop."""
        if self._thread is None:
            return
        self._closing.set()
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    def _run(self, ready: Future[None]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path)
            migrate(conn, marker=self.path.with_name(MIGRATION_MARKER))
        except Exception as exc:  # reported to open()'s caller
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            stopping = False
            while not stopping:
                batch = [self._queue.get()]
                while len(batch) < _MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if _STOP in batch:
                    stopping = True
                    batch = [entry for entry in batch if entry is not _STOP]
                    batch.extend(self._drain_rest())
                if batch:
                    try:
                        self._commit(conn, batch)
                    except Exception as exc:  # a bug here must fail these writes, not every later one
                        log.exception("journal writer failed")
                        for _, future in batch:
                            _settle(future, False, JournalError(f"journal writer failed: {exc}"))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def _drain_rest(self) -> list[Any]:
        rest: list[Any] = []
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return rest
            if entry is not _STOP:
                rest.append(entry)

    def _commit(self, conn: sqlite3.Connection, batch: list[tuple[Write[Any], Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for write, future in batch:
                conn.execute("SAVEPOINT write")
                try:
                    result = write(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO write")
                    if isinstance(exc, sqlite3.Error):  # the store's callers see its own errors only
                        exc = JournalError(f"journal write failed: {exc}")
                    outcomes.append((future, False, exc))
                else:
                    outcomes.append((future, True, result))
                conn.execute("RELEASE write")
            conn.execute("COMMIT")
            self.commits += 1
            if self.failing is not None:
                log.warning("journal commits again", extra={"failing_since": self.failing[1]})
                self.failing = None
        except sqlite3.Error as exc:
            # Nothing of the batch is acknowledged: each waiter hears JournalError and answers its
            # sender with a failure. The next commit is tried afresh and says nothing about this
            # one (no retry-then-believe); until one succeeds, status names the error.
            if self.failing is None:
                self.failing = (str(exc), time.time())
            log.error("journal commit failed", extra={"error": str(exc), "writes": len(batch)})
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _, future in batch:
                _settle(future, False, JournalError(f"journal commit failed: {exc}"))
            return
        for future, ok, value in outcomes:
            _settle(future, ok, value)


def _settle(future: Future[Any], ok: bool, value: Any) -> None:
    """Hand a write's result to its waiter. A waiter that gave up (an asyncio task cancelled
    by a drain cancels the future it awaited) changes nothing: the write stands, and the
    writer thread must not die of it."""
    try:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    except InvalidStateError:
        pass
