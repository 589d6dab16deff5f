"""The store on its own: group commit, isolation of failed writes, schema versions, spool."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vmgateway.model import DicomInstance, Sender
from vmgateway.store import SpoolFull, Store
from vmgateway.store.journal import Journal, JournalClosed, JournalError, connect
from vmgateway.store.schema import SCHEMA_VERSION, SchemaTooNew, migrate


def _insert_event(kind: str) -> Callable[[sqlite3.Connection], int]:
    def write(conn: sqlite3.Connection) -> int:
        return int(conn.execute("INSERT INTO events (at, kind) VALUES (0, ?)", (kind,)).lastrowid or 0)

    return write


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    journal = Journal(tmp_path / "journal.sqlite")
    journal.open()
    yield journal
    journal.close()


def _block_writer(journal: Journal) -> threading.Event:
    """Occupy the writer until the returned event is set, so that later writes queue up."""
    release, entered = threading.Event(), threading.Event()

    def blocking(conn: sqlite3.Connection) -> None:
        entered.set()
        assert release.wait(30)

    journal.submit(blocking)
    assert entered.wait(30)
    return release


def test_waiting_writes_share_one_commit(journal: Journal) -> None:
    release = _block_writer(journal)
    futures = [journal.submit(_insert_event(f"e{i}")) for i in range(20)]
    commits_before = journal.commits
    release.set()
    ids = [f.result(30) for f in futures]
    assert len(set(ids)) == 20
    assert journal.commits == commits_before + 2  # the blocking write, then all 20 together


def test_a_failing_write_is_rolled_back_alone(journal: Journal, tmp_path: Path) -> None:
    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO events (at, kind) VALUES (0, 'half-done')")
        raise ValueError("broken write")

    release = _block_writer(journal)
    before, bad, after = journal.submit(_insert_event("before")), journal.submit(failing), journal.submit(_insert_event("after"))
    release.set()
    assert before.result(30) and after.result(30)
    with pytest.raises(ValueError, match="broken write"):
        bad.result(30)
    conn = connect(tmp_path / "journal.sqlite", read_only=True)
    assert [r[0] for r in conn.execute("SELECT kind FROM events ORDER BY id")] == ["before", "after"]


def test_sqlite_errors_reach_callers_as_journal_errors(journal: Journal) -> None:
    """Callers of the store handle its own errors, never sqlite3's."""

    def duplicate_key(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO settings (key, value) VALUES ('k', 'v')")
        conn.execute("INSERT INTO settings (key, value) VALUES ('k', 'v')")

    with pytest.raises(JournalError, match="journal write failed: UNIQUE constraint failed"):
        journal.write(duplicate_key)
    with pytest.raises(JournalError, match="journal read failed: no such table"):
        journal.read(lambda conn: conn.execute("SELECT * FROM nowhere").fetchall())


def test_closed_journal_refuses_writes(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    journal.open()
    journal.close()
    with pytest.raises(JournalClosed):
        journal.write(_insert_event("late"))


def test_schema_is_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    conn = connect(path)
    assert migrate(conn) == 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert migrate(conn) == SCHEMA_VERSION  # nothing left to do
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew):
        Journal(path).open()


def test_spool_below_watermark_takes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "var", min_free_mb=10**9)
    store.open()
    try:
        incoming = store.incoming_dir / "partial.dcm"
        incoming.write_bytes(b"x" * 1000)
        with pytest.raises(SpoolFull, match="below storage.min_free_mb = 1000000000"):
            store.put_dicom(incoming, DicomInstance("1.2", "1.2.3", "1.2.840.10008.1.2.1"),
                            Sender("dicom", "X", "127.0.0.1"))
        assert not any(p.is_file() for p in (tmp_path / "var" / "spool" / "dicom").rglob("*"))
    finally:
        store.close()


def test_leftovers_in_incoming_are_removed_at_start(tmp_path: Path) -> None:
    store = Store(tmp_path / "var", min_free_mb=0)
    store.open()
    store.close()
    (store.incoming_dir / "tmpabc.dcm").write_bytes(b"partial")
    store.open()
    store.close()
    assert list(store.incoming_dir.iterdir()) == []


def test_spool_files_the_journal_never_recorded_are_removed_at_start(tmp_path: Path) -> None:
    store = Store(tmp_path / "var", min_free_mb=0)
    store.open()
    kept = store.incoming_dir / "kept.dcm"
    kept.write_bytes(b"recorded instance")
    receipt = store.put_dicom(kept, DicomInstance("1.2", "1.2.3", "1.2.840.10008.1.2.1"), Sender("dicom", "X", "127.0.0.1"))
    store.close()
    orphan = tmp_path / "var" / "spool" / "dicom" / "ab" / ("ab" + "0" * 62 + ".dcm")
    orphan.write_bytes(b"renamed, then the process died before the journal commit")
    store.open()
    store.close()
    assert not orphan.exists()
    files = [p for p in (tmp_path / "var" / "spool" / "dicom").rglob("*") if p.is_file()]
    assert len(files) == 1 and receipt.item_id == 1


def test_a_waiter_that_gave_up_does_not_stop_the_writer(journal: Journal) -> None:
    """asyncio cancels the future it awaited when a drain cancels the task: the write stands,
    and every later write is still served."""
    release = _block_writer(journal)
    abandoned = journal.submit(_insert_event("abandoned"))
    assert abandoned.cancel()
    later = journal.submit(_insert_event("later"))
    release.set()
    assert later.result(30) > 0
    assert journal.write(_insert_event("after that")) > 0


def test_a_listener_is_woken_only_by_the_changes_it_waits_for(tmp_path: Path) -> None:
    """A lab sender once woke (and read the journal) at every C-STORE."""
    import asyncio

    from vmgateway.hl7.messages import read_header

    store = Store(tmp_path / "var", min_free_mb=0)
    store.open()
    try:
        heard: dict[str, threading.Event] = {name: threading.Event() for name in ("lab", "dicom", "messages")}
        store.listen(heard["lab"].set, "lab")  # told first: had it been woken, it would be by now
        store.listen(heard["dicom"].set, "dicom", "transfers")
        store.listen(heard["messages"].set, "hl7", "astm")
        raw = b"MSH|^~\\&|LAB|VET|VMG|GW|20261208||ORU^R01|M1|P|2.3.1\rPID|1||P1\r"
        store.submit_hl7(raw, read_header(raw), Sender("hl7", "LAB^VET", "127.0.0.1")).result(10)
        assert heard["messages"].wait(10)
        assert not heard["dicom"].is_set() and not heard["lab"].is_set()
        asyncio.run(store.settings.switch_transfers(True))
        assert heard["dicom"].is_set() and not heard["lab"].is_set()
        kept = store.incoming_dir / "kept.dcm"
        kept.write_bytes(b"an instance")
        heard["dicom"].clear()
        store.put_dicom(kept, DicomInstance("1.2", "1.2.3", "1.2.840.10008.1.2.1"), Sender("dicom", "X", "127.0.0.1"))
        assert heard["dicom"].is_set() and not heard["lab"].is_set()
    finally:
        store.close()
